package config

import (
	"time"

	"github.com/dcmesh/dcmesh/mesh/probe"
)

// HealthConfig sets the probes every gossip site runs through each tunnel
// (BFD format, mesh/probe): they decide whether a peer is up.
type HealthConfig struct {
	// Interval between probes once a session is up; a peer that misses
	// Multiplier of them is down. Default 200 ms × 3: a dead peer is seen
	// within 0.6 s, and the 2-core test machines never flapped at it.
	Interval   time.Duration
	Multiplier uint8
	// Hold is how long a peer that went down must answer again before it
	// counts as up (anti-flap). Default 2 s.
	Hold time.Duration
	// Port is the UDP port probes use on the overlay addresses (default
	// probe.DefaultPort, 3786: not one FRR's bfdd binds).
	Port uint16
	// CertificateWarn and CertificateCritical are how long before this
	// site's certificate or a pinned CA expires health turns degraded and
	// critical (certexpiry.go). Defaults 30 and 7 days.
	CertificateWarn     time.Duration
	CertificateCritical time.Duration
}

type fileHealth struct {
	Interval   string `yaml:"probe_interval"`
	Multiplier *int   `yaml:"probe_multiplier"`
	Hold       string `yaml:"probe_hold"`
	Port       *int   `yaml:"probe_port"`
	CertWarn   string `yaml:"certificate_warn"`
	CertCrit   string `yaml:"certificate_critical"`
}

// parseHealth reads the health section.
func (c *Config) parseHealth(fh fileHealth, bad *problems) {
	def := probe.DefaultConfig()
	c.Health = HealthConfig{Interval: def.Interval, Multiplier: def.Multiplier, Hold: def.Hold, Port: def.Port}
	if fh.Interval != "" {
		d, err := time.ParseDuration(fh.Interval)
		if err != nil || d < probe.MinInterval || d > probe.MaxInterval {
			bad.add("health.probe_interval", "%q: use a duration between %s and %s (default %s)", fh.Interval, probe.MinInterval, probe.MaxInterval, def.Interval)
		} else {
			c.Health.Interval = d
		}
	}
	if n := fh.Multiplier; n != nil {
		if *n < 2 || *n > 50 {
			bad.add("health.probe_multiplier", "%d is out of range: use 2-50 missed probes (default %d)", *n, def.Multiplier)
		} else {
			c.Health.Multiplier = uint8(*n)
		}
	}
	if fh.Hold != "" {
		d, err := time.ParseDuration(fh.Hold)
		if err != nil || d < 0 || d > 10*time.Minute {
			bad.add("health.probe_hold", "%q: use a duration between 0s and 10m (default %s)", fh.Hold, def.Hold)
		} else {
			c.Health.Hold = d
		}
	}
	if p := fh.Port; p != nil {
		if *p < 1 || *p > 65535 {
			bad.add("health.probe_port", "%d is out of range: use 1-65535 (default %d)", *p, def.Port)
		} else {
			c.Health.Port = uint16(*p)
		}
	}
	c.parseCertificateExpiry(fh, bad)
}
