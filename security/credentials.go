package security

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
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
//
// HMAC states are pooled between requests. A keyed state holds pads derived
// from the secret in ordinary memory, as any HMAC computation does while it
// runs. The pool keeps a few such states there between requests.
type Keyer struct {
	secret *memguard.LockedBuffer
	macs   sync.Pool
}

// keySize is the length of a key: hex of a SHA-256 sum.
const keySize = 2 * sha256.Size

// keyState is a pooled HMAC state with its scratch space. The input is
// copied into in, which is wiped after each use, so that the caller's
// plaintext does not escape to the heap through the hash interface.
type keyState struct {
	mac hash.Hash
	in  []byte
	sum [sha256.Size]byte
}

// NewKeyer returns a Keyer with a fresh random secret.
func NewKeyer() *Keyer {
	secret := memguard.NewBufferRandom(32)
	secret.Freeze()
	k := &Keyer{secret: secret}
	k.macs.New = func() any { return &keyState{mac: hmac.New(sha256.New, k.secret.Bytes())} }
	return k
}

// keyOf writes hex(HMAC-SHA256(secret, user NUL password)) to dst.
func (k *Keyer) keyOf(dst *[keySize]byte, user, password []byte) error {
	if !k.secret.IsAlive() {
		return errors.New("key secret was destroyed")
	}
	st := k.macs.Get().(*keyState)
	st.in = append(append(append(st.in[:0], user...), 0), password...)
	st.mac.Reset()
	st.mac.Write(st.in)
	st.mac.Sum(st.sum[:0])
	hex.Encode(dst[:], st.sum[:])
	memguard.WipeBytes(st.in)
	k.macs.Put(st)
	return nil
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
	// Decode into a buffer on the stack when the header is of usual size,
	// so that the plaintext stays off the heap.
	var small [256]byte
	var decoded []byte
	if need := base64.StdEncoding.DecodedLen(len(encoded)); need <= len(small) {
		decoded = small[:need]
	} else {
		decoded = make([]byte, need)
	}
	defer memguard.WipeBytes(decoded)
	n, err := base64.StdEncoding.Decode(decoded, encoded)
	if err != nil {
		return nil, ErrMalformedCredentials
	}

	colon := bytes.IndexByte(decoded[:n], ':')
	if colon <= 0 {
		return nil, ErrMalformedCredentials
	}
	return s.credentials(decoded[:colon], decoded[colon+1:n])
}

func (s *Store) credentials(user, password []byte) (*Credentials, error) {
	var key [keySize]byte
	if err := s.keyer.keyOf(&key, user, password); err != nil {
		return nil, err
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if c, ok := s.cache[string(key[:])]; ok {
		return c, nil
	}
	if len(s.cache) >= s.max {
		clear(s.cache)
	}
	sealed := make([]byte, len(password))
	copy(sealed, password)
	c := &Credentials{User: string(user), Key: string(key[:]), password: memguard.NewEnclave(sealed)}
	s.cache[c.Key] = c
	return c, nil
}

// NewCredentials seals a user and password given in configuration (the
// system connection used by readiness checks). password is wiped.
func (s *Store) NewCredentials(user string, password []byte) (*Credentials, error) {
	defer memguard.WipeBytes(password)
	return s.credentials([]byte(user), password)
}
