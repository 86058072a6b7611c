package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dcmesh/dcmesh/mesh/config"
	"github.com/dcmesh/dcmesh/mesh/control"
	"github.com/dcmesh/dcmesh/netconfig/netconfigtest"
)

// runbookCommands returns the commands of the sh blocks of section (a "## "
// heading) of an examples/ runbook: continuation lines joined, comments cut.
func runbookCommands(t *testing.T, doc, section string) []string {
	t.Helper()
	raw, err := os.ReadFile(doc)
	if err != nil {
		t.Fatal(err)
	}
	var cmds []string
	in, block, cont := false, false, ""
	for _, line := range strings.Split(string(raw), "\n") {
		l := strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(l, "## "):
			in = l == "## "+section
			continue
		case !in:
			continue
		case strings.HasPrefix(l, "```sh"):
			block = true
			continue
		case strings.HasPrefix(l, "```"):
			block = false
			continue
		case !block || l == "":
			continue
		}
		code, _, _ := strings.Cut(l, " #")
		code = strings.TrimSpace(code)
		if c, ok := strings.CutSuffix(code, "\\"); ok {
			cont += strings.TrimSpace(c) + " "
			continue
		}
		cmds = append(cmds, cont+code)
		cont = ""
	}
	if len(cmds) == 0 {
		t.Fatalf("%s: no commands in section %q", doc, section)
	}
	return cmds
}

// siteCommands are the dcmesh commands that talk to the site's agent: the
// test points them at its configuration.
var siteCommands = []string{"renew", "status", "health"}

// runRunbook runs commands as written in dir: dcmesh through the binary
// under test (site commands with --config cfg), anything else through sh.
// It returns each command's output.
func runRunbook(t *testing.T, dir, cfg string, cmds []string) []string {
	t.Helper()
	var outs []string
	for _, c := range cmds {
		var cmd *exec.Cmd
		if args, ok := strings.CutPrefix(c, "dcmesh "); ok {
			argv := strings.Fields(args)
			if slices.Contains(siteCommands, argv[0]) {
				argv = append(argv, "--config", cfg)
			}
			cmd = exec.Command(dcmeshBinary(t), argv...)
		} else {
			cmd = exec.Command("sh", "-c", c)
		}
		cmd.Dir = dir
		t.Logf("$ %s", c)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("runbook command %q: %v\n%s", c, err, out)
		}
		outs = append(outs, string(out))
	}
	return outs
}

// The runbook's "Renewing a site certificate" and "Rolling over the CA"
// run as written on a site fra1 set up as the runbook's first sections say
// (its endpoint 192.0.2.10 on a namespace of its own; nothing leaves it):
// the renewal installs a new serial, and the rollover ends with the site
// pinning the new CA alone under a certificate it signed. About 10 s.
func TestRunbookRenewalAndRollover(t *testing.T) {
	netconfigtest.RequireRoot(t)
	requireTool(t, "ip", "openssl")
	doc := "../../examples/bootstrap.md"
	dir := shortTempDir(t)
	runRunbook(t, dir, "", runbookCommands(t, doc, "Once per cluster (operator machine)"))
	runRunbook(t, dir, "", runbookCommands(t, doc, "Per site (operator machine)"))

	id := netconfigtest.UniqueSuffix()
	ns := netconfigtest.NewNS(t, "dcmt-"+id+"-rb")
	ns.Run(t, "ip", "link", "set", "lo", "up")
	ns.Run(t, "ip", "addr", "add", "192.0.2.10/24", "dev", "lo")
	iface := "dcm" + id + "r"
	t.Cleanup(func() { _ = os.Remove("/var/run/wireguard/" + iface + ".sock") })
	state := filepath.Join(dir, "state")
	if out, err := exec.Command(dcmeshBinary(t), "init", "--bundle", filepath.Join(dir, "fra1-bundle"), "--state-dir", state,
		"--endpoint", "192.0.2.10:51820", "--interface", iface).CombinedOutput(); err != nil {
		t.Fatalf("init: %v\n%s", err, out)
	}
	cfg := config.StateDir(state).Config()
	agent := ns.Start(t, "fra1 agent", dcmeshBinary(t), "agent", "--config", cfg, "--wireguard", "userspace")
	agent.WaitOutput(t, "agent running", 10*time.Second)
	cl := control.NewClient(config.StateDir(state).ControlSocket())
	status := func() control.Status {
		t.Helper()
		st, err := cl.Status(t.Context())
		if err != nil || st.Trust == nil {
			t.Fatalf("status: %v %+v", err, st.Trust)
		}
		return st
	}
	first := status().Trust

	outs := runRunbook(t, dir, cfg, runbookCommands(t, doc, "Renewing a site certificate"))
	all := strings.Join(outs, "\n")
	if !regexp.MustCompile(`(?m)^fra1 +0 +` + first.Certificate.Serial + ` +10\.1\.0\.0/16,fd00:1::/48 +10\.255\.0\.1 +\S+ +36[45]d(\d+h)? +valid$`).MatchString(outs[0]) {
		t.Errorf("ca list does not show the certificate:\n%s", outs[0])
	}
	for _, want := range []string{"renewal of site fra1 (replaces certificate " + first.Certificate.Serial, "dry run: nothing changed", "site fra1 renewed"} {
		if !strings.Contains(all, want) {
			t.Errorf("renewal section: output lacks %q:\n%s", want, all)
		}
	}
	renewed := status().Trust
	if renewed.Certificate.Serial == first.Certificate.Serial || !strings.Contains(all, "certificate: serial "+renewed.Certificate.Serial) {
		t.Errorf("after the renewal section: serial %s (was %s)", renewed.Certificate.Serial, first.Certificate.Serial)
	}
	if _, err := os.Stat(filepath.Join(state, "site.crt.prev")); err != nil {
		t.Errorf("the old certificate is not kept: %v", err)
	}

	// The rollover section's steps, with the copies its prose asks for.
	cmds := runbookCommands(t, doc, "Rolling over the CA")
	last := len(cmds) - 1
	if !strings.HasPrefix(cmds[last], "dcmesh renew --ca ./ca-2.crt") {
		t.Fatalf("the rollover section's last command is %q", cmds[last])
	}
	outs = runRunbook(t, dir, cfg, cmds[:last])
	if !regexp.MustCompile(`pinned CAs: [0-9a-f]{16}, [0-9a-f]{16}`).MatchString(strings.Join(outs, "\n")) {
		t.Errorf("step 1 did not pin two CAs:\n%s", strings.Join(outs, "\n"))
	}
	runRunbook(t, dir, cfg, []string{"cp ./dcmesh-ca-2/ca.crt ./ca-2.crt"})
	runRunbook(t, dir, cfg, cmds[last:])
	end := status().Trust
	if len(end.CAs) != 1 || end.CAs[0].IssuerID == first.CAs[0].IssuerID || end.Certificate.IssuerID != end.CAs[0].IssuerID {
		t.Errorf("after the rollover: CAs %+v, certificate from %s", end.CAs, end.Certificate.IssuerID)
	}
}
