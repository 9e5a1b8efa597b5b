package router

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"unicode/utf8"

	fastjson "github.com/goccy/go-json"
)

// decodeStrict decodes one JSON object from body into v, rejecting unknown
// fields and trailing data. Syntax errors are 400 invalid_json; type errors
// and unknown fields are 422 validation_error naming the field.
func decodeStrict(body []byte, v any) *apiError {
	// Some clients, 1C among them, start UTF-8 text with a byte order mark.
	body = bytes.TrimPrefix(body, []byte("\xef\xbb\xbf"))
	if len(bytes.TrimSpace(body)) == 0 {
		return errInvalidJSON("the body is empty")
	}
	// JSON text is UTF-8; a decoder would turn invalid bytes into U+FFFD
	// and pass a name the client never sent on to the broker.
	if !utf8.Valid(body) {
		return errInvalidJSON("the body is not valid UTF-8")
	}
	dec := fastjson.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return jsonError(err)
	}
	if rest := body[dec.InputOffset():]; len(bytes.TrimSpace(rest)) > 0 {
		return errInvalidJSON("data follows the JSON object")
	}
	return nil
}

// unquote returns the text of a JSON string token that decodeStrict has
// already checked. A string without escapes is its bytes between the quotes,
// which spares the decoder a second pass over a large payload.
func unquote(token []byte) ([]byte, *apiError) {
	if len(token) < 2 {
		return nil, errInvalidJSON("the string ends early")
	}
	if inner := token[1 : len(token)-1]; bytes.IndexByte(inner, '\\') < 0 {
		return inner, nil
	}
	var text string
	if err := fastjson.Unmarshal(token, &text); err != nil {
		return nil, errInvalidJSON(err.Error())
	}
	return []byte(text), nil
}

func jsonError(err error) *apiError {
	var syntaxErr *json.SyntaxError
	var typeErr *json.UnmarshalTypeError
	var fastSyntaxErr *fastjson.SyntaxError
	var fastTypeErr *fastjson.UnmarshalTypeError
	switch {
	case errors.As(err, &syntaxErr):
		return errInvalidJSON(syntaxErr.Error())
	case errors.As(err, &fastSyntaxErr):
		return errInvalidJSON(fastSyntaxErr.Error())
	case errors.As(err, &fastTypeErr):
		return typeError(fastTypeErr.Field, fastTypeErr.Type.Kind().String())
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return errInvalidJSON("the body ends in the middle of a value")
	case errors.As(err, &typeErr):
		return typeError(typeErr.Field, typeErr.Type.Kind().String())
	case err.Error() == "unexpected EOF":
		return errInvalidJSON("the body ends in the middle of a value")
	}
	if field, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		field = strings.Trim(field, `"`)
		return errValidation(field, "unknown field", "неизвестное поле")
	}
	return errInvalidJSON(err.Error())
}

// typeError reports a value of the wrong JSON type in field ("" for the
// body itself).
func typeError(field, kind string) *apiError {
	if field == "" {
		return newAPIError(422, "validation_error",
			"The request body must be a JSON object.",
			"Тело запроса должно быть объектом JSON.")
	}
	return errValidation(field, "must be of type "+jsonType(kind), "должно иметь тип "+jsonType(kind))
}

func jsonType(kind string) string {
	switch kind {
	case "int", "int8", "int16", "int32", "int64", "uint", "uint8", "uint16", "uint32", "uint64":
		return "integer"
	case "float32", "float64":
		return "number"
	case "string":
		return "string"
	case "bool":
		return "boolean"
	case "map", "struct":
		return "object"
	case "slice", "array":
		return "array"
	}
	return kind
}
