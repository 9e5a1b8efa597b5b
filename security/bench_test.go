package security

import "testing"

func BenchmarkValidateName(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if err := ValidateName("exchange", "заказы.входящие.order-events", false); err != nil {
			b.Fatal(err)
		}
		if err := ValidateRoutingKey("order.created.eu-west"); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkParseBasicAuth measures the credentials of a returning client:
// decode, HMAC and a cache hit.
func BenchmarkParseBasicAuth(b *testing.B) {
	s := NewStore(100)
	header := basic("erp-user", "correct horse battery staple")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.ParseBasicAuth(header); err != nil {
			b.Fatal(err)
		}
	}
}
