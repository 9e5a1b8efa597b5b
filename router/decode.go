package router

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
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
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return jsonError(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return errInvalidJSON("data follows the JSON object")
	}
	return nil
}

func jsonError(err error) *apiError {
	var syntaxErr *json.SyntaxError
	var typeErr *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syntaxErr):
		return errInvalidJSON(syntaxErr.Error())
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return errInvalidJSON("the body ends in the middle of a value")
	case errors.As(err, &typeErr):
		if typeErr.Field == "" {
			return newAPIError(422, "validation_error",
				"The request body must be a JSON object.",
				"Тело запроса должно быть объектом JSON.")
		}
		return errValidation(typeErr.Field, "must be of type "+jsonType(typeErr.Type.Kind().String()),
			"должно иметь тип "+jsonType(typeErr.Type.Kind().String()))
	}
	if field, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		field = strings.Trim(field, `"`)
		return errValidation(field, "unknown field", "неизвестное поле")
	}
	return errInvalidJSON(err.Error())
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
