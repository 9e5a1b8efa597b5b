package router

import (
	"errors"
	"fmt"
	"time"

	"github.com/rmqrouter/rmqrouter/actors"
	"github.com/rmqrouter/rmqrouter/transport"
)

// apiError is an error response: status, code and a detail sentence in
// English and Russian. retryAfter, in seconds, is sent as Retry-After when
// positive.
type apiError struct {
	status     int
	code       string
	en, ru     string
	retryAfter int
}

func newAPIError(status int, code, en, ru string) *apiError {
	return &apiError{status: status, code: code, en: en, ru: ru}
}

func (e *apiError) Error() string { return e.code + ": " + e.en }

func (e *apiError) detail(russian bool) string {
	if russian && e.ru != "" {
		return e.ru
	}
	return e.en
}

func errPayloadTooLarge(max int) *apiError {
	return newAPIError(413, "payload_too_large",
		fmt.Sprintf("The request body is larger than the maximum of %d bytes (--max-body-bytes).", max),
		fmt.Sprintf("Тело запроса больше допустимых %d байт (--max-body-bytes).", max))
}

func errInvalidJSON(reason string) *apiError {
	return newAPIError(400, "invalid_json",
		"The request body is not valid JSON: "+reason+".",
		"Тело запроса не является корректным JSON: "+reason+".")
}

// errValidation returns a 422 that names the field and what is wrong with it.
func errValidation(field, en, ru string) *apiError {
	return newAPIError(422, "validation_error",
		fmt.Sprintf("Field %q: %s.", field, en),
		fmt.Sprintf("Поле %q: %s.", field, ru))
}

func errInvalidName(field, reason string) *apiError {
	return newAPIError(400, "invalid_name",
		fmt.Sprintf("Invalid %s: %s.", field, reason),
		fmt.Sprintf("Недопустимое имя (%s): %s.", field, reason))
}

var (
	errAuthRequired = newAPIError(401, "authentication_required",
		"This request needs HTTP Basic credentials of a RabbitMQ user.",
		"Для запроса нужны учётные данные пользователя RabbitMQ (HTTP Basic).")
	errAuthMalformed = newAPIError(401, "authentication_required",
		"The Authorization header is not valid HTTP Basic authentication.",
		"Заголовок Authorization не является корректной аутентификацией HTTP Basic.")
	errAuthFailed = newAPIError(401, "authentication_failed",
		"RabbitMQ refused the user name or password.",
		"RabbitMQ отклонил имя пользователя или пароль.")
	errNotFound = newAPIError(404, "not_found",
		"No such endpoint; see /openapi.yaml for the API.",
		"Такого адреса нет; описание API: /openapi.yaml.")
	errMethodNotAllowed = newAPIError(405, "method_not_allowed",
		"This method is not allowed on this endpoint.",
		"Этот метод не поддерживается для данного адреса.")
	errInternal = newAPIError(500, "internal_error",
		"The router failed to process the request; this is a bug, please report it with the request id.",
		"Маршрутизатор не смог обработать запрос; это ошибка, сообщите о ней с идентификатором запроса.")
)

// mapError turns an error from the Backend into an API error. what names
// the exchange or queue of the request, for the detail sentence.
func mapError(err error, what string) *apiError {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae
	}
	var te *transport.Error
	reason := ""
	if errors.As(err, &te) && te.Reason != "" {
		reason = " (" + te.Reason + ")"
	}

	switch {
	case errors.Is(err, transport.ErrAuthenticationFailed):
		return errAuthFailed
	case errors.Is(err, transport.ErrAccessRefused):
		return newAPIError(403, "access_refused",
			"RabbitMQ denied this user the permission for the request"+reason+".",
			"RabbitMQ не дал пользователю права на этот запрос"+reason+".")
	case errors.Is(err, transport.ErrExchangeNotFound):
		return newAPIError(404, "exchange_not_found",
			fmt.Sprintf("Exchange %q does not exist in this vhost.", what),
			fmt.Sprintf("Обменника %q нет в этом виртуальном хосте.", what))
	case errors.Is(err, transport.ErrQueueNotFound):
		return newAPIError(404, "queue_not_found",
			fmt.Sprintf("Queue %q does not exist in this vhost.", what),
			fmt.Sprintf("Очереди %q нет в этом виртуальном хосте.", what))
	case errors.Is(err, actors.ErrDeliveryTagNotFound):
		return newAPIError(404, "delivery_tag_not_found",
			"No unsettled message with this delivery tag belongs to these credentials.",
			"Для этих учётных данных нет неподтверждённого сообщения с таким delivery tag.")
	case errors.Is(err, actors.ErrSessionNotFound):
		return errSessionNotFound(err)
	case errors.Is(err, actors.ErrUserSessionLimit):
		e := newAPIError(429, "rate_limited",
			"This user holds the maximum number of open sessions; close one or retry later.",
			"У пользователя открыто максимальное число сессий; закройте одну или повторите позже.")
		e.retryAfter = 5
		return e
	case errors.Is(err, actors.ErrSessionLimit):
		e := newAPIError(503, "capacity_exhausted",
			"The router holds the maximum number of open sessions; retry later.",
			"Маршрутизатор держит максимальное число открытых сессий; повторите позже.")
		e.retryAfter = 5
		return e
	case errors.Is(err, actors.ErrDeliveryTagStale):
		return newAPIError(410, "delivery_tag_stale",
			"The delivery tag is from a channel that has closed since; the message will be delivered again with a new tag.",
			"Delivery tag относится к уже закрытому каналу; сообщение будет доставлено снова с новым тегом.")
	case errors.Is(err, transport.ErrUnroutable):
		return newAPIError(422, "unroutable",
			"The broker returned the message: no queue is bound for this routing key"+reason+".",
			"Брокер вернул сообщение: нет очереди, привязанной к этому ключу маршрутизации"+reason+".")
	case errors.Is(err, transport.ErrPreconditionFailed):
		return newAPIError(422, "validation_error",
			"The broker rejected an argument of the request"+reason+".",
			"Брокер отклонил параметр запроса"+reason+".")
	case errors.Is(err, actors.ErrTooManyInFlight):
		e := newAPIError(429, "too_many_in_flight",
			"Too many requests are in flight on this connection; retry later.",
			"Слишком много одновременных запросов на этом соединении; повторите позже.")
		e.retryAfter = 1
		return e
	case errors.Is(err, transport.ErrNacked):
		return newAPIError(502, "publish_nacked",
			"The broker rejected the message with basic.nack; it was not stored. Retry later.",
			"Брокер отклонил сообщение (basic.nack); оно не сохранено. Повторите позже.")
	case errors.Is(err, actors.ErrCircuitOpen):
		e := newAPIError(503, "circuit_open",
			"Recent broker failures opened the circuit breaker of this connection; the request was not sent. Retry after the Retry-After delay.",
			"Из-за недавних сбоев брокера автомат защиты этого соединения разомкнут; запрос не отправлен. Повторите после паузы из Retry-After.")
		e.retryAfter = 1
		var ce *actors.CircuitOpenError
		if errors.As(err, &ce) && ce.RetryAfter > time.Second {
			e.retryAfter = int((ce.RetryAfter + time.Second - 1) / time.Second)
		}
		return e
	case errors.Is(err, transport.ErrBlocked):
		e := newAPIError(503, "broker_blocked",
			"The broker blocked publishing because of a resource alarm (memory or disk); retry later.",
			"Брокер заблокировал публикацию из-за нехватки ресурсов (память или диск); повторите позже.")
		e.retryAfter = 5
		return e
	case errors.Is(err, actors.ErrCapacityExhausted):
		e := newAPIError(503, "capacity_exhausted",
			"The router holds the maximum number of broker connections; retry later.",
			"Маршрутизатор держит максимальное число соединений с брокером; повторите позже.")
		e.retryAfter = 5
		return e
	case errors.Is(err, actors.ErrShuttingDown):
		e := newAPIError(503, "shutting_down",
			"The router is shutting down; retry on another instance or later.",
			"Маршрутизатор останавливается; повторите запрос позже или на другом экземпляре.")
		e.retryAfter = 5
		return e
	case errors.Is(err, actors.ErrConfirmTimeout):
		return newAPIError(504, "confirm_timeout",
			"The broker did not answer within the publish timeout; the message may or may not be stored. Retry if duplicates are acceptable.",
			"Брокер не ответил за отведённое время; сообщение могло быть сохранено или нет. Повторите, если дубликаты допустимы.")
	case errors.Is(err, actors.ErrRequestTimeout):
		// The same code as a publish timeout, with wording that does not
		// speak of a stored message.
		return newAPIError(504, "confirm_timeout",
			"The broker did not answer within the request deadline; retry the request.",
			"Брокер не ответил за отведённое время; повторите запрос.")
	case errors.Is(err, transport.ErrOutcomeUnknown):
		e := newAPIError(503, "broker_unavailable",
			"The connection to the broker closed before it confirmed the message; it may or may not be stored. Retry if duplicates are acceptable.",
			"Соединение с брокером закрылось до подтверждения; сообщение могло быть сохранено или нет. Повторите, если дубликаты допустимы.")
		e.retryAfter = 1
		return e
	case errors.Is(err, transport.ErrNotSent), errors.Is(err, transport.ErrBrokerUnavailable), errors.Is(err, actors.ErrActorGone):
		e := newAPIError(503, "broker_unavailable",
			"The broker is unavailable; the request was not carried out. Retry later.",
			"Брокер недоступен; запрос не выполнен. Повторите позже.")
		e.retryAfter = 1
		return e
	}
	return errInternal
}

// errSessionNotFound is the 404 of an unknown session id, of a session of
// other credentials, and (with reason) of an ended session of the caller.
func errSessionNotFound(err error) *apiError {
	en := "No open session with this id belongs to these credentials."
	ru := "Для этих учётных данных нет открытой сессии с таким идентификатором."
	var ended *actors.SessionEndedError
	if errors.As(err, &ended) {
		switch ended.Reason {
		case actors.EndClosed:
			en, ru = "The session was closed.", "Сессия закрыта."
		case actors.EndExpired:
			en, ru = "The session expired: it had no request for its idle_timeout; its unacknowledged messages returned to the queue.",
				"Сессия истекла: за idle_timeout не было запросов; неподтверждённые сообщения вернулись в очередь."
		case actors.EndQueueDeleted:
			en, ru = "The session ended because its queue was deleted.", "Сессия завершена: её очередь удалена."
		case actors.EndAccessRefused:
			en, ru = "The session ended because the broker refused access to its queue.", "Сессия завершена: брокер отказал в доступе к её очереди."
		case actors.EndConsumeFailed:
			en, ru = "The session ended because its consumer could not be restarted; open a new session.",
				"Сессия завершена: её потребителя не удалось перезапустить; откройте новую сессию."
		case actors.EndConnection:
			en, ru = "The session ended because its broker connection closed for good; open a new session.",
				"Сессия завершена: соединение с брокером закрыто окончательно; откройте новую сессию."
		case actors.EndShutdown:
			en, ru = "The session ended because the router is shutting down.", "Сессия завершена: маршрутизатор останавливается."
		}
	}
	return newAPIError(404, "session_not_found", en, ru)
}
