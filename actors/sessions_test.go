package actors

import (
	"errors"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

func TestSessionRegistryLimits(t *testing.T) {
	r := newSessionRegistry()
	a1, err := r.reserve("key-a", "alice", 3, 2)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.reserve("key-a", "alice", 3, 2); err != nil {
		t.Fatal(err)
	}
	if _, err := r.reserve("key-a2", "alice", 3, 2); !errors.Is(err, ErrUserSessionLimit) {
		t.Fatalf("third session of alice: %v, want ErrUserSessionLimit (the limit is per user name, not per password)", err)
	}
	if _, err := r.reserve("key-b", "bob", 3, 2); err != nil {
		t.Fatal(err)
	}
	if _, err := r.reserve("key-c", "carol", 3, 2); !errors.Is(err, ErrSessionLimit) {
		t.Fatalf("fourth session: %v, want ErrSessionLimit", err)
	}
	r.release(a1)
	if _, err := r.reserve("key-a", "alice", 3, 2); err != nil {
		t.Fatalf("a released session still counts: %v", err)
	}
	if n := r.count(); n != 3 {
		t.Fatalf("count = %d, want 3", n)
	}
}

func TestSessionRegistryOwnership(t *testing.T) {
	r := newSessionRegistry()
	id, err := r.reserve("owner", "u", 10, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(id) != 32 {
		t.Fatalf("id %q is not 128 bits in hex", id)
	}
	if _, err := r.lookup(id, "owner"); !errors.Is(err, ErrSessionNotFound) {
		t.Fatalf("a reserved session is reachable before activate: %v", err)
	}
	pid := actor.NewPID("local", "session")
	if !r.activate(id, pid) {
		t.Fatal("activate failed")
	}
	if got, err := r.lookup(id, "owner"); err != nil || !got.Equal(pid) {
		t.Fatalf("lookup = %v, %v", got, err)
	}
	if _, err := r.lookup(id, "other"); err != ErrSessionNotFound {
		t.Fatalf("other credentials got %v, want the plain ErrSessionNotFound", err)
	}

	r.end(id, EndExpired)
	var ended *SessionEndedError
	if _, err := r.lookup(id, "owner"); !errors.As(err, &ended) || ended.Reason != EndExpired || !errors.Is(err, ErrSessionNotFound) {
		t.Fatalf("owner after end got %v, want SessionEndedError(expired)", err)
	}
	if _, err := r.lookup(id, "other"); err != ErrSessionNotFound {
		t.Fatalf("other credentials learn the end reason: %v", err)
	}
	r.end(id, EndClosed)
	if _, err := r.lookup(id, "owner"); !errors.As(err, &ended) || ended.Reason != EndExpired {
		t.Fatalf("a second end changed the reason: %v", err)
	}

	r.sweep(time.Hour)
	if _, err := r.lookup(id, "owner"); !errors.As(err, &ended) {
		t.Fatal("sweep dropped a recent end reason")
	}
	r.sweep(0)
	if _, err := r.lookup(id, "owner"); err != ErrSessionNotFound {
		t.Fatalf("end reason kept past the retention: %v", err)
	}
	if r.activate(id, pid) {
		t.Fatal("an ended session was activated again")
	}
}

func TestSessionIDsAreUnique(t *testing.T) {
	seen := make(map[string]bool)
	for i := 0; i < 1000; i++ {
		id := newSessionID()
		if seen[id] {
			t.Fatalf("id %s issued twice", id)
		}
		seen[id] = true
	}
}
