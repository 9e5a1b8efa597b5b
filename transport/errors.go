package transport

import (
	"errors"
	"fmt"
	"net"
	"strings"

	amqp "github.com/rabbitmq/amqp091-go"
)

var (
	// ErrAuthenticationFailed means the broker refused the user name or password.
	ErrAuthenticationFailed = errors.New("broker refused the credentials")
	// ErrAccessRefused means the broker denied a permission (AMQP 403 or 530).
	ErrAccessRefused = errors.New("broker refused access")
	// ErrExchangeNotFound means the exchange does not exist in the vhost.
	ErrExchangeNotFound = errors.New("exchange not found")
	// ErrQueueNotFound means the queue does not exist in the vhost.
	ErrQueueNotFound = errors.New("queue not found")
	// ErrUnroutable means the broker returned a mandatory publishing.
	ErrUnroutable = errors.New("message returned as unroutable")
	// ErrNacked means the broker replied with basic.nack.
	ErrNacked = errors.New("broker rejected the message with basic.nack")
	// ErrNotSent means the publishing never reached the socket, so it is
	// safe to send again without risk of a duplicate.
	ErrNotSent = errors.New("message was not sent")
	// ErrOutcomeUnknown means the publishing was sent but its channel or
	// connection closed before the confirm arrived: the broker may or may
	// not have the message.
	ErrOutcomeUnknown = errors.New("channel closed before the confirm arrived")
	// ErrBrokerUnavailable means the broker could not be reached or the
	// connection is gone.
	ErrBrokerUnavailable = errors.New("broker unavailable")
	// ErrBlocked means the broker blocked the connection (memory or disk alarm).
	ErrBlocked = errors.New("broker blocked publishing (resource alarm)")
	// ErrPreconditionFailed means the broker rejected an argument (AMQP 406).
	ErrPreconditionFailed = errors.New("broker rejected the request (precondition failed)")
)

// Error carries the broker's reply for a failed operation. Kind is one of the
// Err sentinels above; Code and Reason are the AMQP reply code and text when
// the broker sent one (Code is 0 otherwise). Retryable tells whether the same
// operation may succeed later without a change by the client.
type Error struct {
	Kind      error
	Code      int
	Reason    string
	Retryable bool
	Op        string
}

func (e *Error) Error() string {
	if e.Code != 0 {
		return fmt.Sprintf("%s: %v (%d %s)", e.Op, e.Kind, e.Code, e.Reason)
	}
	if e.Reason != "" {
		return fmt.Sprintf("%s: %v: %s", e.Op, e.Kind, e.Reason)
	}
	return fmt.Sprintf("%s: %v", e.Op, e.Kind)
}

func (e *Error) Unwrap() error { return e.Kind }

func newError(op string, kind error, retryable bool) *Error {
	return &Error{Op: op, Kind: kind, Retryable: retryable}
}

// classify maps an amqp091-go or network error to an *Error. what is
// "exchange" or "queue" and decides the meaning of an AMQP 404.
func classify(op, what string, err error) *Error {
	if err == nil {
		return nil
	}
	var te *Error
	if errors.As(err, &te) {
		return te
	}

	var ae *amqp.Error
	if errors.As(err, &ae) {
		e := &Error{Op: op, Code: ae.Code, Reason: ae.Reason}
		switch {
		case ae == amqp.ErrCredentials || (ae.Code == amqp.AccessRefused && strings.Contains(ae.Reason, "Login was refused")):
			e.Kind = ErrAuthenticationFailed
		case ae == amqp.ErrSASL:
			e.Kind = ErrAuthenticationFailed
		case ae == amqp.ErrVhost, ae.Code == amqp.AccessRefused, ae.Code == amqp.NotAllowed, ae.Code == amqp.ResourceLocked:
			// 405 RESOURCE_LOCKED: an exclusive queue of another
			// connection, which this user cannot use either.
			e.Kind = ErrAccessRefused
		case ae.Code == amqp.NotFound && (what == "queue" || strings.Contains(ae.Reason, "no queue")):
			e.Kind = ErrQueueNotFound
		case ae.Code == amqp.NotFound:
			e.Kind = ErrExchangeNotFound
		case ae.Code == amqp.PreconditionFailed:
			e.Kind = ErrPreconditionFailed
		default:
			e.Kind = ErrBrokerUnavailable
			e.Retryable = true
		}
		return e
	}

	var ne net.Error
	if errors.As(err, &ne) || errors.Is(err, net.ErrClosed) {
		return &Error{Op: op, Kind: ErrBrokerUnavailable, Reason: err.Error(), Retryable: true}
	}
	return &Error{Op: op, Kind: ErrBrokerUnavailable, Reason: err.Error(), Retryable: true}
}
