package security

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/awnumar/memguard"
)

// ErrNoCredentials is returned by ParseBasicAuth when the header is absent.
var ErrNoCredentials = errors.New("authorization header is missing")

// ErrMalformedCredentials is returned by ParseBasicAuth for a header that is
// not valid HTTP Basic authentication.
var ErrMalformedCredentials = errors.New("authorization header is not valid Basic authentication")

// Keyer derives credential keys. It holds a random 32-byte secret in a
// memguard LockedBuffer (locked in memory, guarded, never swapped), so keys
// cannot be precomputed from a password list and differ between processes.
// The buffer stays open for the life of the Keyer: every request needs it,
// and opening an Enclave costs several system calls.
type Keyer struct {
	secret *memguard.LockedBuffer
}

// NewKeyer returns a Keyer with a fresh random secret.
func NewKeyer() *Keyer {
	secret := memguard.NewBufferRandom(32)
	secret.Freeze()
	return &Keyer{secret: secret}
}

// keyOf returns hex(HMAC-SHA256(secret, user NUL password)).
func (k *Keyer) keyOf(user string, password []byte) (string, error) {
	if !k.secret.IsAlive() {
		return "", errors.New("key secret was destroyed")
	}
	mac := hmac.New(sha256.New, k.secret.Bytes())
	mac.Write([]byte(user))
	mac.Write([]byte{0})
	mac.Write(password)
	return hex.EncodeToString(mac.Sum(nil)), nil
}

// Credentials are a RabbitMQ user name and a sealed password. A Credentials
// value is immutable after creation and safe to share between goroutines.
type Credentials struct {
	User string
	// Key identifies the (user, password) pair without revealing the password.
	Key      string
	password *memguard.Enclave
}

// String returns the user name only, so a Credentials value printed by
// mistake reveals no secret.
func (c *Credentials) String() string { return "user=" + c.User }

// GoString keeps %#v as safe as %v.
func (c *Credentials) GoString() string { return c.String() }

// WithPassword opens the password for the duration of fn and wipes the
// plaintext afterwards. fn must not keep the slice.
func (c *Credentials) WithPassword(fn func(password []byte) error) error {
	if c.password == nil {
		return fn(nil)
	}
	buf, err := c.password.Open()
	if err != nil {
		return fmt.Errorf("open sealed password: %w", err)
	}
	defer buf.Destroy()
	return fn(buf.Bytes())
}

// Store turns Authorization headers into Credentials and caches them by key,
// so the password of a returning client is sealed once and not on every
// request. The cache is bounded: when full it is cleared, which only costs a
// re-seal.
type Store struct {
	keyer *Keyer
	max   int

	mu    sync.Mutex
	cache map[string]*Credentials
}

// NewStore returns a Store that caches at most max credentials.
func NewStore(max int) *Store {
	if max <= 0 {
		max = 10000
	}
	return &Store{keyer: NewKeyer(), max: max, cache: make(map[string]*Credentials)}
}

// ParseBasicAuth decodes an Authorization header value ("Basic base64(user:password)")
// and returns its Credentials. The decoded plaintext is wiped before return.
func (s *Store) ParseBasicAuth(header []byte) (*Credentials, error) {
	if len(header) == 0 {
		return nil, ErrNoCredentials
	}
	const prefix = "basic "
	if len(header) < len(prefix) || !strings.EqualFold(string(header[:len(prefix)]), prefix) {
		return nil, ErrMalformedCredentials
	}
	encoded := header[len(prefix):]
	decoded := make([]byte, base64.StdEncoding.DecodedLen(len(encoded)))
	n, err := base64.StdEncoding.Decode(decoded, encoded)
	if err != nil {
		memguard.WipeBytes(decoded)
		return nil, ErrMalformedCredentials
	}
	decoded = decoded[:n]
	defer memguard.WipeBytes(decoded)

	colon := -1
	for i, b := range decoded {
		if b == ':' {
			colon = i
			break
		}
	}
	if colon <= 0 {
		return nil, ErrMalformedCredentials
	}
	user := string(decoded[:colon])
	password := decoded[colon+1:]
	return s.credentials(user, password)
}

func (s *Store) credentials(user string, password []byte) (*Credentials, error) {
	key, err := s.keyer.keyOf(user, password)
	if err != nil {
		return nil, err
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if c, ok := s.cache[key]; ok {
		return c, nil
	}
	if len(s.cache) >= s.max {
		clear(s.cache)
	}
	sealed := make([]byte, len(password))
	copy(sealed, password)
	c := &Credentials{User: user, Key: key, password: memguard.NewEnclave(sealed)}
	s.cache[key] = c
	return c, nil
}

// NewCredentials seals a user and password given in configuration (the
// system connection used by readiness checks). password is wiped.
func (s *Store) NewCredentials(user string, password []byte) (*Credentials, error) {
	defer memguard.WipeBytes(password)
	return s.credentials(user, password)
}
