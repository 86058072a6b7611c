package mesh

import (
	"crypto/ed25519"

	"github.com/dcmesh/dcmesh/mesh/trust"
	"github.com/dcmesh/dcmesh/wg"
)

// The local site of the agent's tests: fra1 with two static peers (the same
// file mesh/config's tests parse).

var (
	keyB = mustPub("B+GAjH2cWwE0CSDuYCj34qe3cBJGqKoMdSIXiCmLQ2g=")
	keyC = mustPub("C+GAjH2cWwE0CSDuYCj34qe3cBJGqKoMdSIXiCmLQ2g=")
)

func mustPub(s string) wg.PublicKey {
	k, err := wg.ParsePublicKey(s)
	if err != nil {
		panic(err)
	}
	return k
}

const validConfig = `
site: fra1
interface: dcm0
listen_port: 51821
private_key_file: wg.key
overlay_address: 10.255.0.1/32
local_prefixes: [10.1.0.0/16]
routes:
  table: 100
  metric: 50
peers:
  - name: ams1
    public_key: B+GAjH2cWwE0CSDuYCj34qe3cBJGqKoMdSIXiCmLQ2g=
    endpoint: 192.0.2.2:51820
    allowed_prefixes: [10.2.0.0/16, 10.255.0.2/32]
  - name: par1
    public_key: C+GAjH2cWwE0CSDuYCj34qe3cBJGqKoMdSIXiCmLQ2g=
    allowed_prefixes: [10.3.0.0/16]
    persistent_keepalive: 0s
`

// testSite is a certified remote site: certificate and identity key.
type testSite struct {
	cert *trust.Certificate
	key  ed25519.PrivateKey
}
