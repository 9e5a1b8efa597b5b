package transport

import "testing"

// TestPublishingHeaderFromArgument checks that the publish id header comes
// from the argument, never from Message.PublishID: a resend on another channel
// may write that field while this channel still encodes the message.
func TestPublishingHeaderFromArgument(t *testing.T) {
	m := &Message{PublishID: "set-by-another-channel", Headers: map[string]any{"a": "1"}}

	p := m.publishing("")
	if _, has := p.Headers[PublishIDHeader]; has {
		t.Errorf("headers %v carry %s without an id argument", p.Headers, PublishIDHeader)
	}
	if p.Headers["a"] != "1" {
		t.Errorf("headers %v lost the message's own header", p.Headers)
	}

	p = m.publishing("from-argument")
	if got := p.Headers[PublishIDHeader]; got != "from-argument" {
		t.Errorf("%s = %v, want from-argument", PublishIDHeader, got)
	}
	if _, has := m.Headers[PublishIDHeader]; has {
		t.Error("publishing changed the message's own headers")
	}
}

// TestPublishingDropsCallerPublishID checks that a caller's own value of the
// reserved header never reaches the broker.
func TestPublishingDropsCallerPublishID(t *testing.T) {
	m := &Message{Headers: map[string]any{PublishIDHeader: "from-caller", "a": "1"}}
	p := m.publishing("")
	if _, has := p.Headers[PublishIDHeader]; has {
		t.Errorf("headers %v keep the caller's %s", p.Headers, PublishIDHeader)
	}
	if p.Headers["a"] != "1" {
		t.Errorf("headers %v lost the message's own header", p.Headers)
	}
}
