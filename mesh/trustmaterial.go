package mesh

import (
	"bytes"
	"crypto/ed25519"
	"crypto/x509"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/dcmesh/dcmesh/mesh/config"
	"github.com/dcmesh/dcmesh/mesh/control"
	"github.com/dcmesh/dcmesh/mesh/enroll"
	"github.com/dcmesh/dcmesh/mesh/trust"
)

// Online renewal (`dcmesh renew --bundle DIR`, POST /v1/renew): a new
// certificate, identity key and CA bundle for this site are checked against
// the running one (same site, signed by a CA of the new bundle, identity key
// matching, nothing widened: trust.CheckRenewal), written over the
// configured files (trustmaterial_files.go), and adopted without a restart:
// the agent signs its next record with the new certificate and every peer
// takes it. Everything is validated before anything changes; a refusal
// leaves the files and the running agent as they were.

// renewal is a validated renewal, ready to install.
type renewal struct {
	cas      []*x509.Certificate
	cert     *trust.Certificate
	identity ed25519.PrivateKey
	caPEM    []byte
	certPEM  []byte
	keyPEM   []byte
	cfg      *config.Config // the running configuration with the new certificate's defaults
	change   trust.AuthorityChange
}

// apiRenew is POST /v1/renew: check, write, adopt (a dry run only checks).
func (a *Agent) apiRenew(rt *siteRuntime, in control.RenewRequest) (control.RenewReply, error) {
	defer clear(in.Identity) // the request's copy of the key, also on a refusal
	if rt.enr == nil || rt.store == nil {
		return control.RenewReply{}, config.ErrNoGossip
	}
	if rt.rot.Rotating() {
		// The rotation signs its acks with the identity key and peers check
		// them against the record they hold: do not change it under them.
		return control.RenewReply{}, errors.New("renew: a WireGuard key rotation is under way: retry when it has ended (dcmesh status: rotation stable)")
	}
	r, err := a.checkRenewal(rt, in, time.Now())
	if err != nil {
		return control.RenewReply{}, err
	}
	reply := control.RenewReply{Site: r.cert.Site, Serial: r.cert.Serial.Text(16), PreviousSerial: rt.enr.Cert.Serial.Text(16),
		NotAfter: r.cert.NotAfter.UTC(), IdentityKeyChanged: !r.cert.IdentityKey.Equal(rt.enr.Cert.IdentityKey),
		Narrower: r.change.Narrower, Written: []string{}, DryRun: in.DryRun}
	for _, ca := range r.cas {
		reply.CAs = append(reply.CAs, trust.CAID(ca))
	}
	if in.DryRun {
		return reply, nil
	}
	if reply.Written, err = writeTrustFiles(rt.cfg, r); err != nil {
		return control.RenewReply{}, err
	}
	a.adoptRenewal(rt, r)
	return reply, nil
}

// checkRenewal parses and checks a renewal bundle against the running site.
// Errors name the bundle file and what does not match; none holds key
// material.
func (a *Agent) checkRenewal(rt *siteRuntime, in control.RenewRequest, now time.Time) (*renewal, error) {
	r := &renewal{caPEM: in.CA, certPEM: in.Cert, keyPEM: in.Identity}
	var err error
	if r.cas, err = trust.ParseCABundle(in.CA, now); err != nil {
		return nil, fmt.Errorf("renew: %s: %w", config.CACertFile, err)
	}
	if r.cert, err = trust.ParseCertPEM(in.Cert); err != nil {
		return nil, fmt.Errorf("renew: %s: %w", config.SiteCertFile, err)
	}
	if r.identity, err = trust.ParseKeyPEM(in.Identity); err != nil {
		return nil, fmt.Errorf("renew: %s: %w", config.IdentityKeyFile, err)
	}
	if err := trust.CheckIdentityKey(r.cert, r.identity); err != nil {
		return nil, fmt.Errorf("renew: %s does not belong to %s (files from different bundles?): %w", config.IdentityKeyFile, config.SiteCertFile, err)
	}
	running := rt.enr.Cert
	if r.cert.Site != running.Site {
		return nil, fmt.Errorf("renew: %s is for site %q, this agent runs site %q: use the bundle issued for %s", config.SiteCertFile, r.cert.Site, running.Site, running.Site)
	}
	r.cfg = a.renewedConfig(rt, r.cert)
	if err := checkSigner(rt, r, now); err != nil {
		return nil, err
	}
	if bytes.Equal(r.cert.Raw, running.Raw) {
		return r, checkCAUpdate(rt, r, in, now) // the same certificate: a new CA bundle only
	}
	rc := trust.RenewalCheck{CAs: r.cas, CRLs: rt.store.Revocations(), Now: now, Skew: rt.cfg.Trust.ClockSkew,
		Announced: r.cfg.LocalPrefixes, Endpoints: siteAddrs(rt.cfg)}
	if len(r.cfg.LocalPrefixes) == 0 {
		rc.Announced = nil // they follow the new certificate
	}
	if err := trust.CheckRenewal(running, r.cert, rc); err != nil {
		return nil, fmt.Errorf("renew: %w", err)
	}
	r.change = trust.CompareAuthority(running.Authority(), r.cert.Authority())
	return r, checkPeersKept(rt, r, in, now)
}

// checkSigner refuses a certificate signed by a CA this site does not pin
// yet: a new CA comes in through a CA bundle holding old and new (installed
// with the running certificate), never with the first certificate it
// signed, so one renewal cannot move a site to a CA no peer trusts.
func checkSigner(rt *siteRuntime, r *renewal, now time.Time) error {
	if err := r.cert.Verify(rt.enr.CAs, rt.store.Revocations(), now, rt.cfg.Trust.ClockSkew); err != nil {
		return fmt.Errorf("renew: %s (serial %x) does not verify against the CAs this site pins now (%s): %w; to move to a new CA, first install a %s holding the old and the new CA on every site (examples/bootstrap.md, \"Rolling over the CA\")",
			config.SiteCertFile, r.cert.Serial, caIDs(rt.enr.CAs), err, config.CACertFile)
	}
	return nil
}

// checkCAUpdate checks a bundle that brings the running certificate with
// another CA bundle (a CA rollover's first and last steps): the bundle must
// differ, and the certificate must verify under it.
func checkCAUpdate(rt *siteRuntime, r *renewal, in control.RenewRequest, now time.Time) error {
	if caIDs(r.cas) == caIDs(rt.enr.CAs) {
		return fmt.Errorf("renew: nothing to do: %s is the running certificate (serial %x) and %s pins the same CAs (%s)",
			config.SiteCertFile, r.cert.Serial, config.CACertFile, caIDs(r.cas))
	}
	if err := r.cert.Verify(r.cas, rt.store.Revocations(), now, rt.cfg.Trust.ClockSkew); err != nil {
		return fmt.Errorf("renew: %s leaves out the CA that signed this site's certificate (serial %x): %w; re-issue the site from a CA in the bundle first", config.CACertFile, r.cert.Serial, err)
	}
	return checkPeersKept(rt, r, in, now)
}

// checkPeersKept refuses a CA bundle under which a peer's certificate that
// verifies now would not, unless the operator allows dropping those sites.
func checkPeersKept(rt *siteRuntime, r *renewal, in control.RenewRequest, now time.Time) error {
	if dropped := peersDroppedBy(rt, r.cas, now); len(dropped) > 0 && !in.AllowDroppingPeers {
		return fmt.Errorf("renew: %s would no longer verify the certificates of %v (signed by a CA the new bundle leaves out): re-issue those sites from a CA in the bundle first, or pass --allow-dropping-peers to drop them", config.CACertFile, dropped)
	}
	return nil
}

func caIDs(cas []*x509.Certificate) string {
	ids := make([]string, len(cas))
	for i, c := range cas {
		ids[i] = trust.CAID(c)
	}
	return strings.Join(ids, ", ")
}

// renewedConfig is the running configuration as it will be with the new
// certificate: local prefixes the file leaves out follow the certificate
// (enroll.Load filled them from the old one at start).
func (a *Agent) renewedConfig(rt *siteRuntime, cert *trust.Certificate) *config.Config {
	cfg := *rt.cfg
	if onDisk, err := config.Load(a.opts.ConfigPath); err == nil && len(onDisk.LocalPrefixes) == 0 {
		cfg.LocalPrefixes = nil
	}
	return &cfg
}

// siteAddrs are the underlay addresses this site announces: its WireGuard
// endpoint and its gossip address.
func siteAddrs(cfg *config.Config) []netip.Addr {
	var out []netip.Addr
	if cfg.Endpoint.IsValid() {
		out = append(out, cfg.Endpoint.Addr())
	}
	if cfg.Gossip != nil {
		if ap := cfg.Gossip.AdvertiseAddr(); ap.IsValid() && !ap.Addr().IsUnspecified() {
			out = append(out, ap.Addr())
		}
	}
	return out
}

// peersDroppedBy lists the sites whose certificates verify now under the
// running CAs but would not under cas.
func peersDroppedBy(rt *siteRuntime, cas []*x509.Certificate, now time.Time) []string {
	var out []string
	crl, skew := rt.store.Revocations(), rt.cfg.Trust.ClockSkew
	for _, name := range rt.store.Names() {
		sr, ok := rt.store.Record(name)
		if !ok || sr.Cert == nil || sr.Leaving {
			continue
		}
		if sr.Cert.Verify(rt.enr.CAs, crl, now, skew) == nil && sr.Cert.Verify(cas, crl, now, skew) != nil {
			out = append(out, name)
		}
	}
	return out
}

// adoptRenewal switches the running agent to the installed renewal, as a
// reload of changed trust files does: the rotator signs acks with the new
// identity key, received records are checked against the new CAs, and the
// site's record is re-signed with the new certificate and published at once.
func (a *Agent) adoptRenewal(rt *siteRuntime, r *renewal) {
	enr := &enroll.Enrollment{CAs: r.cas, Cert: r.cert, Identity: r.identity, GossipKey: rt.enr.GossipKey}
	if len(r.cfg.LocalPrefixes) == 0 {
		r.cfg.LocalPrefixes = r.cert.Prefixes
	}
	rt.rot.Reload(r.cfg, nil, enr.Identity)
	old := rt.enr.Cert
	rt.cfg, rt.enr = r.cfg, enr
	rt.in.Reload(enr.CAs)
	var own []byte
	if rt.own != nil {
		own = rt.own.Raw
	}
	rt.in.SetOwn(rt.nodeName(), rt.seq, enr.Cert.Serial, own)
	a.log.Info("site certificate renewed", "site", rt.cfg.Site, "serial", r.cert.Serial.Text(16), "previous_serial", old.Serial.Text(16),
		"not_after", r.cert.NotAfter.UTC().Format(time.RFC3339), "cas", len(r.cas), "identity_key_changed", !old.IdentityKey.Equal(r.cert.IdentityKey))
	a.logReconcileError(a.reconcile(rt))
	if err := a.publish(rt); err != nil {
		a.log.Error("cannot publish this site's renewed record; it goes out with the next refresh", "err", err)
	}
}

// errRenewWrite marks a failure to write the renewed files.
var errRenewWrite = errors.New("renew: writing the new files failed")
