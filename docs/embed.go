// Package docs holds the user and operator documentation of rmqrouter and
// embeds the API description, so the server returns the same file at
// /openapi.yaml that docs/openapi.yaml contains.
package docs

import _ "embed"

// OpenAPI is the content of docs/openapi.yaml.
//
//go:embed openapi.yaml
var OpenAPI []byte
