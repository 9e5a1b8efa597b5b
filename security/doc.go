// Package security holds the secrets and the input checks of rmqrouter.
//
// Terms:
//
//   - Credentials: a RabbitMQ user name and password taken from an HTTP Basic
//     Authorization header. The password lives in a memguard Enclave (encrypted
//     in memory, opened only for the instant a connection is dialled) and is
//     never logged, formatted or returned in an error.
//   - Key: HMAC-SHA256 of the password under a random per-process secret. Two
//     requests share a cached AMQP connection only when their (vhost, user, Key)
//     are equal, so a request whose password differs from the one a connection
//     was opened with never reaches that connection.
//   - Name validation: exchange, queue and routing key rules that RabbitMQ
//     enforces (at most 255 bytes of valid UTF-8), checked before a request
//     reaches the broker, so a bad name is a 400 and never closes a channel.
//
// Functions in this package are safe for concurrent use unless a doc comment
// says otherwise.
package security
