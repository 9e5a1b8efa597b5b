// Package testenv helps integration tests run against the real RabbitMQ at
// RMQROUTER_TEST_AMQP_URL (default amqp://guest:guest@127.0.0.1:5672/): it
// opens a direct AMQP connection for setup and checks, names exchanges and
// queues uniquely and deletes them in cleanup, and starts the whole router
// in-process on a loopback port.
package testenv
