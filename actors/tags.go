package actors

import (
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// tagRegistry maps the router's delivery tags to the session that issued
// them and the credentials key that owns them. Tags count up from 1 across
// the process and are never reused.
type tagRegistry struct {
	mu      sync.Mutex
	next    uint64
	entries map[uint64]*tagEntry
}

type tagEntry struct {
	session *actor.PID
	owner   string
	stale   bool
	staleAt time.Time
}

func newTagRegistry() *tagRegistry {
	return &tagRegistry{entries: make(map[uint64]*tagEntry)}
}

// issue returns a new tag owned by owner and served by session.
func (r *tagRegistry) issue(session *actor.PID, owner string) uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.next++
	r.entries[r.next] = &tagEntry{session: session, owner: owner}
	return r.next
}

// nextTag returns a new tag that is not registered (auto-ack deliveries).
func (r *tagRegistry) nextTag() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.next++
	return r.next
}

func (r *tagRegistry) lookup(tag uint64) (tagEntry, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.entries[tag]
	if !ok {
		return tagEntry{}, false
	}
	return *e, true
}

func (r *tagRegistry) remove(tag uint64) {
	r.mu.Lock()
	delete(r.entries, tag)
	r.mu.Unlock()
}

// markStale keeps tags known but answers them as stale from now on.
func (r *tagRegistry) markStale(tags []uint64) {
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, tag := range tags {
		if e, ok := r.entries[tag]; ok {
			e.stale = true
			e.staleAt = now
		}
	}
}

// sweep forgets tags that have been stale for longer than retention.
func (r *tagRegistry) sweep(retention time.Duration) {
	cutoff := time.Now().Add(-retention)
	r.mu.Lock()
	defer r.mu.Unlock()
	for tag, e := range r.entries {
		if e.stale && e.staleAt.Before(cutoff) {
			delete(r.entries, tag)
		}
	}
}
