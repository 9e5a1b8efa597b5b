// Package transport is rmqrouter's only user of amqp091-go. It dials
// connections, runs confirm-mode publishing channels, checks topology and runs
// consumers. It knows nothing about HTTP or actors: its callers pass callbacks
// and receive results through them.
//
// Terms (AMQP 0-9-1, as amqp091-go uses them):
//
//   - Publishing: a message with its properties, sent with basic.publish.
//   - Confirm: the broker's basic.ack or basic.nack for a publishing on a
//     channel in confirm mode, identified by a per-channel delivery tag that
//     counts publishings from 1.
//   - Return: basic.return, sent before the confirm when a mandatory
//     publishing could not be routed to any queue. A return carries no
//     delivery tag, so a channel matches it by exchange, routing key and
//     message id. Where a mandatory publishing shares those three with one
//     still waiting for its confirm, it carries the header PublishIDHeader.
//   - Generation: a counter that a consumer's channel gets when it is opened.
//     Broker delivery tags are only valid on the channel that produced them;
//     the generation tells an old tag from a new one.
//
// Goroutines: every channel type here starts its own goroutines, documented on
// its constructor, and stops them when the channel closes. Every notification
// channel registered with amqp091-go (NotifyPublish, NotifyReturn,
// NotifyClose, NotifyCancel, NotifyBlocked) is buffered and drained until
// amqp091-go closes it, because amqp091-go blocks its frame reader while a
// listener is full. In v1.17.0 it gives up after 5 s and drops the
// notification.
//
// Errors: every error returned or passed to a callback wraps one of the Err
// sentinels of errors.go, so callers map them with errors.Is.
package transport
