package security

import (
	"encoding/base64"
	"fmt"
	"strings"
	"testing"
)

func basic(user, password string) []byte {
	return []byte("Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+password)))
}

func TestParseBasicAuth(t *testing.T) {
	s := NewStore(10)
	c, err := s.ParseBasicAuth(basic("erp", "pa:ss word"))
	if err != nil {
		t.Fatal(err)
	}
	if c.User != "erp" {
		t.Fatalf("user = %q", c.User)
	}
	var got string
	if err := c.WithPassword(func(p []byte) error { got = string(p); return nil }); err != nil {
		t.Fatal(err)
	}
	if got != "pa:ss word" {
		t.Fatalf("password = %q", got)
	}
}

func TestParseBasicAuthRejectsMalformed(t *testing.T) {
	s := NewStore(10)
	if _, err := s.ParseBasicAuth(nil); err != ErrNoCredentials {
		t.Fatalf("empty header: %v", err)
	}
	for _, h := range []string{"Bearer abc", "Basic", "Basic !!!", "Basic " + base64.StdEncoding.EncodeToString([]byte("nocolon")), "Basic " + base64.StdEncoding.EncodeToString([]byte(":pw"))} {
		if _, err := s.ParseBasicAuth([]byte(h)); err != ErrMalformedCredentials {
			t.Errorf("%q: %v, want ErrMalformedCredentials", h, err)
		}
	}
}

func TestKeyDependsOnPassword(t *testing.T) {
	s := NewStore(10)
	a, _ := s.ParseBasicAuth(basic("u", "one"))
	b, _ := s.ParseBasicAuth(basic("u", "two"))
	a2, _ := s.ParseBasicAuth(basic("u", "one"))
	if a.Key == b.Key {
		t.Fatal("different passwords share a key")
	}
	if a.Key != a2.Key || a != a2 {
		t.Fatal("the same credentials were not served from the cache")
	}
	other := NewStore(10)
	c, _ := other.ParseBasicAuth(basic("u", "one"))
	if c.Key == a.Key {
		t.Fatal("keys of two stores are equal: the secret is not random")
	}
}

func TestCredentialsNeverPrintPassword(t *testing.T) {
	s := NewStore(10)
	c, _ := s.ParseBasicAuth(basic("u", "hunter2-secret"))
	for _, out := range []string{fmt.Sprint(c), fmt.Sprintf("%v %+v %#v %s", c, c, c, c)} {
		if strings.Contains(out, "hunter2-secret") {
			t.Fatalf("formatted credentials reveal the password: %s", out)
		}
	}
}

func TestStoreIsBounded(t *testing.T) {
	s := NewStore(3)
	for i := 0; i < 10; i++ {
		if _, err := s.ParseBasicAuth(basic("u", fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(s.cache); n > 3 {
		t.Fatalf("cache holds %d entries, limit 3", n)
	}
}

func TestValidateNames(t *testing.T) {
	valid := []string{"orders", "заказы.входящие", "a.b-c_d:e", strings.Repeat("x", 255)}
	for _, n := range valid {
		if err := ValidateName("queue", n, false); err != nil {
			t.Errorf("%q rejected: %v", n, err)
		}
	}
	invalid := []string{"", strings.Repeat("x", 256), "a\x00b", "tab\there", string([]byte{0xff, 0xfe})}
	for _, n := range invalid {
		if err := ValidateName("queue", n, false); err == nil {
			t.Errorf("%q accepted", n)
		}
	}
	if err := ValidateName("exchange", "", true); err != nil {
		t.Errorf("default exchange rejected: %v", err)
	}
	if err := ValidateRoutingKey("order.created"); err != nil {
		t.Errorf("dotted routing key rejected: %v", err)
	}
	if err := ValidateHeaderName("with space"); err == nil {
		t.Error("header name with a space accepted")
	}
}

func FuzzParseBasicAuth(f *testing.F) {
	f.Add([]byte("Basic dTpw"))
	f.Add([]byte("basic "))
	s := NewStore(100)
	f.Fuzz(func(t *testing.T, header []byte) {
		c, err := s.ParseBasicAuth(header)
		if err == nil && (c == nil || c.User == "") {
			t.Fatal("accepted credentials without a user")
		}
	})
}
