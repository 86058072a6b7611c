package control

import (
	"testing"
	"time"
)

// rotate --wait may take as long as its wait (the socket's long-poll
// bound); without --wait it is an ordinary request.
func TestRotateRequestResponseWithin(t *testing.T) {
	for _, tc := range []struct {
		in   RotateRequest
		want time.Duration
	}{
		{RotateRequest{Timeout: time.Minute}, 0},
		{RotateRequest{Wait: true, Timeout: time.Minute}, time.Minute},
		{RotateRequest{Wait: true}, DefaultRotateWait},
	} {
		if got := tc.in.ResponseWithin(); got != tc.want {
			t.Errorf("%+v: %s, want %s", tc.in, got, tc.want)
		}
	}
}
