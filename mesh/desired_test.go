package mesh

import (
	"fmt"
	"strings"
	"testing"

	"github.com/dcmesh/dcmesh/mesh/config"
	"github.com/dcmesh/dcmesh/netconfig"
	"github.com/dcmesh/dcmesh/netconfig/netconfigtest"
	"github.com/dcmesh/dcmesh/wg"
	"github.com/dcmesh/dcmesh/wg/wgtest"
)

// The configuration above, applied to fake devices, renders to this state.
func TestDesiredStateGolden(t *testing.T) {
	cfg, err := config.Parse([]byte(validConfig), "/etc/dcmesh")
	if err != nil {
		t.Fatal(err)
	}
	key, _ := wg.GeneratePrivateKey()
	d := computeDesired(cfg, key, 1380, nil, nil)

	got := renderDesired(t, d)
	want := fmt.Sprintf(`[dcm0] public=%s port=51821
  peer B+GAjH2c endpoint=192.0.2.2:51820 allowed=10.2.0.0/16,10.255.0.2/32 keepalive=25s
  peer C+GAjH2c endpoint=- allowed=10.3.0.0/16 keepalive=0s
link dcm0 mtu 1380 up
  addr 10.255.0.1/32
route 10.2.0.0/16 dev dcm0 proto 220 metric 50 table 100
route 10.255.0.2/32 dev dcm0 proto 220 metric 50 table 100
route 10.3.0.0/16 dev dcm0 proto 220 metric 50 table 100
route unreachable 10.2.0.0/16 proto 220 metric 51 table 100
route unreachable 10.255.0.2/32 proto 220 metric 51 table 100
route unreachable 10.3.0.0/16 proto 220 metric 51 table 100
`, key.Public().Short())
	if got != want {
		t.Errorf("state:\n%s\nwant:\n%s", got, want)
	}
	if strings.Contains(got, "private") {
		t.Error("rendering mentions a private key")
	}
}

// renderDesired applies d to fresh fake devices (dcm0, MTU 1420) and renders
// the WireGuard state and the kernel state as golden text.
func renderDesired(t *testing.T, d desiredState) string {
	t.Helper()
	wgc := wgtest.NewClient("dcm0")
	if _, err := wg.Apply(wgc, "dcm0", d.WG); err != nil {
		t.Fatal(err)
	}
	nl := netconfigtest.NewFake()
	nl.AddLink("dcm0", 1420)
	if _, err := netconfig.New(nl, nil).Apply(d.Net); err != nil {
		t.Fatal(err)
	}
	return wgc.String() + nl.String()
}
