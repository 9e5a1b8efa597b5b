// Package router is rmqrouter's HTTP front end, built on fasthttp. It parses
// and validates requests, authenticates them with HTTP Basic credentials,
// hands them to the actor tree through the Backend interface, and maps every
// outcome to a status code and an error body in one table (errors.go).
//
// Contracts:
//
//   - fasthttp reuses a RequestCtx, its body and its header bytes once the
//     handler returns. Everything that crosses into a Backend call is copied
//     first: JSON decoding allocates new strings and slices, raw bodies are
//     copied explicitly, header values are converted to strings.
//   - Every non-2xx response has the body {"error", "detail", "request_id"};
//     detail is Russian when Accept-Language prefers "ru". No response is a
//     500 unless a handler panicked; the panic is recovered and logged.
//   - Every response carries X-Request-ID: the client's value when it is a
//     safe token of at most 128 bytes, a generated one otherwise.
//   - Request and response logs carry request_id and never a password, an
//     Authorization header or a message body.
//
// Header names are kept as the client sent them (the server does not
// normalize them), so X-Header-<name> keeps the case of <name>; lookups of
// other headers are case-insensitive.
package router
