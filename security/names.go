package security

import (
	"fmt"
	"unicode"
	"unicode/utf8"
)

// MaxNameBytes is the AMQP 0-9-1 limit for exchange and queue names and
// routing keys (a shortstr).
const MaxNameBytes = 255

// NameError describes an invalid AMQP name. Field is the request field
// ("exchange", "queue", "routing_key", a header name), Reason a short English
// sentence without the value.
type NameError struct {
	Field  string
	Reason string
}

func (e *NameError) Error() string { return fmt.Sprintf("invalid %s: %s", e.Field, e.Reason) }

// ValidateName checks an exchange or queue name. The empty name is allowed
// only where allowEmpty is set (the default exchange). RabbitMQ accepts any
// UTF-8, so Cyrillic and dots are valid; control characters are not.
func ValidateName(field, name string, allowEmpty bool) error {
	if name == "" {
		if allowEmpty {
			return nil
		}
		return &NameError{Field: field, Reason: "must not be empty"}
	}
	return validateShortString(field, name)
}

// ValidateRoutingKey checks a routing key; the empty key is valid.
func ValidateRoutingKey(key string) error {
	if key == "" {
		return nil
	}
	return validateShortString("routing_key", key)
}

func validateShortString(field, s string) error {
	if len(s) > MaxNameBytes {
		return &NameError{Field: field, Reason: fmt.Sprintf("longer than %d bytes", MaxNameBytes)}
	}
	if !utf8.ValidString(s) {
		return &NameError{Field: field, Reason: "not valid UTF-8"}
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return &NameError{Field: field, Reason: "contains a control character"}
		}
	}
	return nil
}

// ValidateHeaderName checks the name of an AMQP message header (a table
// key): 1 to 128 bytes of printable UTF-8.
func ValidateHeaderName(name string) error {
	if name == "" {
		return &NameError{Field: "headers", Reason: "a header name must not be empty"}
	}
	if len(name) > 128 {
		return &NameError{Field: "headers", Reason: "a header name is longer than 128 bytes"}
	}
	if !utf8.ValidString(name) {
		return &NameError{Field: "headers", Reason: "a header name is not valid UTF-8"}
	}
	for _, r := range name {
		if unicode.IsControl(r) || r == ' ' {
			return &NameError{Field: "headers", Reason: "a header name contains a space or control character"}
		}
	}
	return nil
}
