package mesh

import (
	"bytes"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dcmesh/dcmesh/mesh/ca"
	"github.com/dcmesh/dcmesh/mesh/ca/catest"
	"github.com/dcmesh/dcmesh/mesh/config"
	"github.com/dcmesh/dcmesh/mesh/control"
	"github.com/dcmesh/dcmesh/mesh/enroll"
	"github.com/dcmesh/dcmesh/mesh/records"
)

// renewFixture is a running site fra1 (its trust files in a state
// directory, as init installs them) and its CA.
type renewFixture struct {
	caDir, state string
	now          time.Time
	a            *Agent
	rt           *siteRuntime
}

var fra1 = ca.IssueOptions{Site: "fra1", Prefixes: catest.Prefixes("10.1.0.0/16", "10.9.0.0/16"),
	Overlay: netip.MustParseAddr("10.255.0.1"), Underlay: catest.Prefixes("192.0.2.0/24")}

func newRenewFixture(t *testing.T) *renewFixture {
	t.Helper()
	f := &renewFixture{now: catest.Now()}
	f.caDir = catest.NewDir(t, f.now.Add(-time.Hour))
	o := fra1
	o.Now = f.now.Add(-time.Hour)
	_, bundle := catest.MustIssue(t, f.caDir, o)
	f.state = t.TempDir()
	for _, n := range []string{config.CACertFile, config.SiteCertFile, config.IdentityKeyFile} {
		catest.CopyFile(t, filepath.Join(bundle, n), filepath.Join(f.state, n))
	}
	cfg := &config.Config{Site: "fra1", Endpoint: netip.MustParseAddrPort("192.0.2.1:51820"),
		Trust: config.TrustConfig{CAFile: filepath.Join(f.state, config.CACertFile), CertFile: filepath.Join(f.state, config.SiteCertFile),
			IdentityKeyFile: filepath.Join(f.state, config.IdentityKeyFile), ClockSkew: time.Minute},
		Health: config.HealthConfig{CertificateWarn: config.DefaultCertificateWarn, CertificateCritical: config.DefaultCertificateCritical}}
	enr, err := enroll.Load(cfg, f.now)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	f.rt = &siteRuntime{cfg: cfg, enr: enr, store: records.NewStore(filepath.Join(f.state, "records.json"), log)}
	f.a = NewAgent(Options{ConfigPath: filepath.Join(f.state, "no-such-config.yaml"), Logger: log})
	return f
}

// request reads a bundle directory as `dcmesh renew` sends it.
func request(t *testing.T, bundle string) control.RenewRequest {
	t.Helper()
	read := func(n string) []byte {
		b, err := os.ReadFile(filepath.Join(bundle, n))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	return control.RenewRequest{CA: read(config.CACertFile), Cert: read(config.SiteCertFile), Identity: read(config.IdentityKeyFile)}
}

// snapshot is every file of dir and its content.
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out[e.Name()] = string(b)
	}
	return out
}

// A renewal from the same CA with the same prefixes is accepted; the
// certificate and the (new) identity key are replaced, the old files kept as
// .prev, the unchanged CA file left alone, and the files read back as a
// restart reads them.
func TestRenewalInstallsFiles(t *testing.T) {
	f := newRenewFixture(t)
	o := fra1
	o.Now = f.now
	cert, bundle := catest.MustIssue(t, f.caDir, o)
	before := snapshot(t, f.state)
	r, err := f.a.checkRenewal(f.rt, request(t, bundle), f.now)
	if err != nil {
		t.Fatal(err)
	}
	written, err := writeTrustFiles(f.rt.cfg, r)
	if err != nil {
		t.Fatal(err)
	}
	cfg := f.rt.cfg
	if strings.Join(written, " ") != cfg.Trust.IdentityKeyFile+" "+cfg.Trust.CertFile {
		t.Errorf("written %q, want the key and the certificate only", written)
	}
	after := snapshot(t, f.state)
	if after[config.SiteCertFile+PrevSuffix] != before[config.SiteCertFile] || after[config.IdentityKeyFile+PrevSuffix] != before[config.IdentityKeyFile] {
		t.Error("the old certificate and key are not kept as .prev")
	}
	if _, ok := after[config.CACertFile+PrevSuffix]; ok || after[config.CACertFile] != before[config.CACertFile] {
		t.Error("the unchanged CA file was rewritten")
	}
	if fi, err := os.Stat(cfg.Trust.IdentityKeyFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("identity key mode: %v %v", fi.Mode(), err)
	}
	enr, err := enroll.Load(cfg, f.now)
	if err != nil || enr.Cert.Serial.Cmp(cert.Serial) != 0 {
		t.Fatalf("after the renewal the files read as %v, %v; want serial %x", enr, err, cert.Serial)
	}
}

// Bundles that do not match the running site are refused with an error
// naming what does not match, and nothing changes on disk.
func TestRenewalRefusals(t *testing.T) {
	f := newRenewFixture(t)
	issue := func(caDir string, mod func(o *ca.IssueOptions)) string {
		o := fra1
		// Replace: the CA's own renewal rule is tested in mesh/ca; here
		// the agent must refuse whatever the CA signed.
		o.Now, o.Out, o.Replace = f.now, filepath.Join(t.TempDir(), "b"), true
		mod(&o)
		_, b := catest.MustIssue(t, caDir, o)
		return b
	}
	good := issue(f.caDir, func(*ca.IssueOptions) {})
	otherCA := catest.NewDir(t, f.now.Add(-time.Hour))
	cases := []struct {
		name string
		req  control.RenewRequest
		want []string
	}{
		{"wrong site", request(t, issue(f.caDir, func(o *ca.IssueOptions) {
			o.Site, o.Prefixes, o.Overlay = "ams1", catest.Prefixes("10.2.0.0/16"), netip.MustParseAddr("10.255.0.2")
		})), []string{`site.crt is for site "ams1", this agent runs site "fra1"`}},
		{"wrong CA", func() control.RenewRequest {
			r := request(t, issue(otherCA, func(*ca.IssueOptions) {}))
			r.CA = request(t, good).CA // the bundle claims our CA: the signature says otherwise
			return r
		}(), []string{"does not verify"}},
		{"wider prefixes", request(t, issue(f.caDir, func(o *ca.IssueOptions) {
			o.Prefixes = catest.Prefixes("10.0.0.0/15", "10.9.0.0/16")
		})), []string{"wider prefixes: 10.0.0.0/15 is not inside the running certificate's 10.1.0.0/16"}},
		{"underlay anywhere", request(t, issue(f.caDir, func(o *ca.IssueOptions) { o.Underlay = nil })),
			[]string{"wider underlay: anywhere"}},
		{"other overlay", request(t, issue(f.caDir, func(o *ca.IssueOptions) {
			o.Overlay = netip.MustParseAddr("10.255.0.9")
		})), []string{"overlay address changes from 10.255.0.1 to 10.255.0.9"}},
		{"corrupt certificate", func() control.RenewRequest {
			r := request(t, good)
			r.Cert = r.Cert[:len(r.Cert)/2]
			return r
		}(), []string{"renew: site.crt:"}},
		{"corrupt CA file", func() control.RenewRequest {
			r := request(t, good)
			r.CA = []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
			return r
		}(), []string{"renew: ca.crt:"}},
		{"corrupt key", func() control.RenewRequest {
			r := request(t, good)
			r.Identity = []byte("not a key")
			return r
		}(), []string{"renew: identity.key:"}},
		{"key of another bundle", func() control.RenewRequest {
			r := request(t, good)
			r.Identity = request(t, issue(f.caDir, func(*ca.IssueOptions) {})).Identity
			return r
		}(), []string{"identity.key does not belong to site.crt"}},
		{"the running certificate", func() control.RenewRequest {
			r := request(t, good)
			r.Cert, _ = os.ReadFile(f.rt.cfg.Trust.CertFile)
			r.Identity, _ = os.ReadFile(f.rt.cfg.Trust.IdentityKeyFile)
			return r
		}(), []string{"nothing to do: site.crt is the running certificate"}},
		{"another CA's whole bundle", request(t, issue(otherCA, func(*ca.IssueOptions) {})),
			[]string{"does not verify against the CAs this site pins now", "holding the old and the new CA"}},
	}
	before := snapshot(t, f.state)
	serial := f.rt.enr.Cert.Serial
	for _, tc := range cases {
		_, err := f.a.checkRenewal(f.rt, tc.req, f.now)
		if err == nil {
			t.Errorf("%s: accepted", tc.name)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: %v\nwant …%s…", tc.name, err, w)
			}
		}
		if bytes.Contains([]byte(err.Error()), bytes.TrimSpace(tc.req.Identity)) || strings.Contains(err.Error(), "PRIVATE KEY") {
			t.Errorf("%s: the error holds key material: %v", tc.name, err)
		}
	}
	if after := snapshot(t, f.state); len(after) != len(before) {
		t.Errorf("files changed: %d before, %d after", len(before), len(after))
	} else {
		for n, b := range before {
			if after[n] != b {
				t.Errorf("%s changed", n)
			}
		}
	}
	if f.rt.enr.Cert.Serial.Cmp(serial) != 0 {
		t.Error("the running certificate changed")
	}
}

// The status builder classifies this site's certificate by the configured
// thresholds at the time given, and health turns degraded, critical, and
// critical once expired.
func TestTrustStatusExpiry(t *testing.T) {
	f := newRenewFixture(t)
	na := f.rt.enr.Cert.NotAfter
	for _, tc := range []struct {
		at    time.Time
		state control.ExpiryState
		code  int
		msg   string
	}{
		{na.Add(-60 * config.Day), control.ExpiryHealthy, 0, "expires"},
		{na.Add(-10 * config.Day), control.ExpiryDegraded, 1, "degraded: within 30d"},
		{na.Add(-3 * config.Day), control.ExpiryCritical, 2, "critical: within 7d"},
		{na.Add(time.Hour), control.ExpiryCritical, 2, "expired"},
	} {
		ts := trustStatus(f.rt, tc.at)
		if ts.Certificate.State != tc.state || !strings.Contains(ts.Certificate.Message, tc.msg) || ts.Certificate.Subject != "fra1" ||
			ts.Certificate.Serial != f.rt.enr.Cert.Serial.Text(16) || len(ts.CAs) != 1 || ts.CAs[0].State != control.ExpiryHealthy {
			t.Errorf("at %s: %+v", tc.at, ts)
		}
		st := control.Status{Site: "fra1", Peers: []control.PeerStatus{{Site: "ams1", State: control.PeerUp}}, Trust: ts}
		if h := control.EvaluateHealth(st, 0, 0, tc.at); h.ExitCode != tc.code {
			t.Errorf("at %s: health %d %q, want %d", tc.at, h.ExitCode, h.Reasons, tc.code)
		}
	}
	f.rt.cfg.Health.CertificateWarn = 400 * config.Day // longer than the certificate lives
	if ts := trustStatus(f.rt, f.now); ts.Certificate.State != control.ExpiryDegraded || ts.WarnSeconds != int64(400*config.Day/time.Second) {
		t.Errorf("with a 400-day warning: %+v", ts.Certificate)
	}
}

// The certificate expiry thresholds apply on reload; the probes' settings
// of the same section still need a restart.
func TestReloadAppliesCertificateThresholds(t *testing.T) {
	base := reloadBase(t)
	n := cloneConfig(base)
	n.Health.CertificateWarn, n.Health.CertificateCritical = 60*config.Day, 14*config.Day
	if why := reloadRefusal(base, n, false); why != "" {
		t.Errorf("changing health.certificate_warn/critical refused: %q", why)
	}
	n.Health.Interval += time.Millisecond
	if why := reloadRefusal(base, n, false); !strings.Contains(why, "health changed") {
		t.Errorf("changing the probe interval: %q", why)
	}
}
