package config

import (
	"strings"
	"testing"
)

func TestMetricsAddr(t *testing.T) {
	base := "site: a\nprivate_key_file: /k\noverlay_address: 10.255.0.1/32\n"
	for _, ok := range []string{"127.0.0.1:9469", "[::1]:9469", ":9469", "localhost:9469", "192.0.2.10:0"} {
		c, err := Parse([]byte(base+"metrics_addr: \""+ok+"\"\n"), "/")
		if err != nil || c.MetricsAddr != ok {
			t.Errorf("metrics_addr %s: %v, %+v", ok, err, c)
		}
	}
	if c, err := Parse([]byte(base), "/"); err != nil || c.MetricsAddr != "" {
		t.Errorf("no metrics_addr: %v %q", err, c.MetricsAddr)
	}
	for _, bad := range []string{"9469", "127.0.0.1", "metrics.example:9469", "127.0.0.1:99999", "127.0.0.1:http"} {
		_, err := Parse([]byte(base+"metrics_addr: \""+bad+"\"\n"), "/")
		if err == nil || !strings.Contains(err.Error(), "metrics_addr: \""+bad+"\" is not IP:PORT: write e.g. 127.0.0.1:9469") {
			t.Errorf("metrics_addr %s: %v", bad, err)
		}
	}
}
