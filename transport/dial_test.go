package transport

import (
	"strings"
	"testing"
)

func TestParseURLKeepsPasswordOut(t *testing.T) {
	for _, raw := range []string{
		"amqp://user:s3cr3t-pw@host:notaport/",
		"amqp://user:s3cr3t-pw@host:5672/%zz",
		"ftp://user:s3cr3t-pw@host/",
		"amqp://user:s3cr3t-pw@host:99999/",
	} {
		_, err := ParseURL(raw)
		if err == nil {
			t.Errorf("%s: accepted", Redact(raw))
			continue
		}
		if strings.Contains(err.Error(), "s3cr3t-pw") {
			t.Errorf("error reveals the password: %v", err)
		}
	}
}

func TestParseURLSplitsCredentials(t *testing.T) {
	p, err := ParseURL("amqps://bob:p%40ss@rabbit.example:5671/%2Fprod")
	if err != nil {
		t.Fatal(err)
	}
	if p.User != "bob" || p.Password != "p@ss" || p.Vhost != "/prod" {
		t.Fatalf("parsed %+v", p)
	}
	if got := p.Endpoint.String(); got != "amqps://rabbit.example:5671" {
		t.Fatalf("endpoint = %s", got)
	}
}

func TestRedact(t *testing.T) {
	if got := Redact("amqp://u:pw@h:5672/v"); strings.Contains(got, "pw@") || !strings.Contains(got, "u:xxxxx@h") {
		t.Fatalf("Redact = %s", got)
	}
	if got := Redact("amqp://h:5672/"); got != "amqp://h:5672/" {
		t.Fatalf("Redact changed a URL without password: %s", got)
	}
}
