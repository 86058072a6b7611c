package config

import (
	"fmt"
	"strings"
	"testing"
)

func TestGatewayWeight(t *testing.T) {
	base := "site: a\nprivate_key_file: /k\noverlay_address: 10.255.0.1/32\n"
	if c, err := Parse([]byte(base), "/"); err != nil || c.GatewayWeight != DefaultGatewayWeight {
		t.Errorf("no gateway_weight: %v, weight %d, want %d", err, c.GatewayWeight, DefaultGatewayWeight)
	}
	for _, w := range []int{0, 1, 7, 255} {
		c, err := Parse([]byte(base+fmt.Sprintf("gateway_weight: %d\n", w)), "/")
		if err != nil || c.GatewayWeight != w {
			t.Errorf("gateway_weight %d: %v, %+v", w, err, c)
		}
	}
	for _, w := range []string{"-1", "256", "1000"} {
		_, err := Parse([]byte(base+"gateway_weight: "+w+"\n"), "/")
		if err == nil || !strings.Contains(err.Error(), "gateway_weight: "+w+" is out of range: use 1-255") || !strings.Contains(err.Error(), "0 for a standby") {
			t.Errorf("gateway_weight %s: %v", w, err)
		}
	}
}
