package config

import (
	"net"
	"net/netip"
	"strconv"
)

// DefaultMetricsPort is the port the examples serve metrics on (the
// unit's DCMESH_METRICS_ADDR, examples/dcmesh.yaml).
const DefaultMetricsPort = 9469

// parseMetricsAddr reads metrics_addr: HOST:PORT to serve Prometheus
// metrics on, HOST an IP address, "localhost" or empty (every address).
// The agent's --metrics-addr overrides it.
func (c *Config) parseMetricsAddr(s string, bad *problems) {
	if s == "" {
		return
	}
	host, port, err := net.SplitHostPort(s)
	n, perr := strconv.Atoi(port)
	_, aerr := netip.ParseAddr(host)
	if err != nil || perr != nil || n < 0 || n > 65535 || host != "" && host != "localhost" && aerr != nil {
		bad.add("metrics_addr", "%q is not IP:PORT: write e.g. 127.0.0.1:%d (loopback or a management address: the metrics name every peer)", s, DefaultMetricsPort)
		return
	}
	c.MetricsAddr = s
}
