package router

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
)

// Formats of the ids the router generates when a client sends none.
const (
	// IDsCompact is the format of request ids and message ids of 16 URL-safe
	// characters (96 random bits). With them, a JSON publish without its own
	// ids and without headers keeps its AMQP properties within 64 bytes,
	// which RabbitMQ 3.10 stores faster than longer ones (docs/operations.md).
	IDsCompact = "compact"
	// IDsUUID is the format of random (version 4) UUIDs as message ids and 32
	// hex digits as request ids, for clients that read a message id as a UUID.
	IDsUUID = "uuid"
)

// idGenerator is the source of new request ids and message ids, in one format.
type idGenerator struct{ uuid bool }

func (g idGenerator) newRequestID() string {
	if g.uuid {
		var b [16]byte
		_, _ = rand.Read(b[:])
		return hex.EncodeToString(b[:])
	}
	return compactID()
}

func (g idGenerator) newMessageID() string {
	if g.uuid {
		return newUUID()
	}
	return compactID()
}

// compactID returns 96 random bits as 16 characters of URL-safe base64.
func compactID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	var out [16]byte
	base64.RawURLEncoding.Encode(out[:], b[:])
	return string(out[:])
}

// newUUID returns a random (version 4) UUID.
func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	var out [36]byte
	hex.Encode(out[0:8], b[0:4])
	out[8] = '-'
	hex.Encode(out[9:13], b[4:6])
	out[13] = '-'
	hex.Encode(out[14:18], b[6:8])
	out[18] = '-'
	hex.Encode(out[19:23], b[8:10])
	out[23] = '-'
	hex.Encode(out[24:], b[10:])
	return string(out[:])
}
