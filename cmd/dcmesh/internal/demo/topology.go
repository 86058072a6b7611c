package demo

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/dcmesh/dcmesh/mesh/config"
	"github.com/vishvananda/netlink"
)

// pickNames chooses the random id in every name and the underlay subnet.
func (d *demo) pickNames() error {
	for try := 0; ; try++ {
		var b [2]byte
		if _, err := rand.Read(b[:]); err != nil {
			return err
		}
		d.id = hex.EncodeToString(b[:])
		taken := exists(nsPath("dcmdemo-" + d.id + "-ul"))
		for i := 1; i <= d.o.Sites; i++ {
			taken = taken || exists(nsPath(fmt.Sprintf("dcmdemo-%s-s%d", d.id, i))) ||
				exists(fmt.Sprintf("/var/run/wireguard/dcmd%s%d.sock", d.id, i))
		}
		if !taken {
			break
		}
		if try == 20 {
			return errors.New("could not find unused namespace names dcmdemo-XXXX-*")
		}
	}
	// Everything lives in namespaces of its own, but an underlay that the
	// host also routes would confuse whoever reads the output: avoid it.
	used, err := hostPrefixes()
	if err != nil {
		return fmt.Errorf("read this machine's routes: %w", err)
	}
	seed := int(d.id[0])<<8 | int(d.id[1])
	for k := range 150 {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{192, 168, byte(100 + (seed+k)%150), 0}), 24)
		if !config.OverlapsAny(p, used) {
			d.subnet = p
			break
		}
	}
	if !d.subnet.IsValid() {
		return errors.New("every 192.168.100-249.0/24 is routed on this machine: no free underlay subnet")
	}
	d.ulNS = "dcmdemo-" + d.id + "-ul"
	base := d.subnet.Addr().As4()
	for i := 1; i <= d.o.Sites; i++ {
		ul := base
		ul[3] = byte(i)
		name := fmt.Sprintf("site%d", i)
		d.sites = append(d.sites, &site{
			idx: i, name: name,
			ns:       fmt.Sprintf("dcmdemo-%s-s%d", d.id, i),
			iface:    fmt.Sprintf("dcmd%s%d", d.id, i),
			underlay: netip.AddrFrom4(ul),
			host:     netip.AddrFrom4([4]byte{10, byte(i), 0, 1}),
			prefix:   netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i), 0, 0}), 24),
			overlay:  netip.AddrFrom4([4]byte{10, 255, 0, byte(i)}),
			cfg:      filepath.Join(name, config.ConfigFile),
		})
	}
	return nil
}

// buildTopology creates the underlay namespace with its bridge and one
// namespace per site attached to it by a veth pair.
func (d *demo) buildTopology() error {
	if err := d.newNS(d.ulNS); err != nil {
		return err
	}
	ul, err := handleAt(d.ulNS)
	if err != nil {
		return err
	}
	defer ul.Close()
	if err := linkUp(ul, "lo"); err != nil {
		return err
	}
	if err := ul.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br0"}}); err != nil {
		return fmt.Errorf("create bridge br0 in %s: %w", d.ulNS, err)
	}
	disableIPv6(d.ulNS, "br0")
	br, err := ul.LinkByName("br0")
	if err != nil {
		return err
	}
	if err := ul.LinkSetUp(br); err != nil {
		return err
	}
	for _, s := range d.sites {
		if err := d.buildSite(ul, br, s); err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
	}
	return nil
}

func (d *demo) buildSite(ul *netlink.Handle, br netlink.Link, s *site) error {
	if err := d.newNS(s.ns); err != nil {
		return err
	}
	h, err := handleAt(s.ns)
	if err != nil {
		return err
	}
	defer h.Close()
	if err := linkUp(h, "lo"); err != nil {
		return err
	}
	if err := addAddr(h, "lo", netip.PrefixFrom(s.host, 24)); err != nil {
		return err
	}
	fd, err := os.Open(nsPath(s.ns))
	if err != nil {
		return err
	}
	// A veth pair: "siteN" on the underlay bridge, "eth0" in the site.
	port := s.name
	err = ul.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: port}, PeerName: "eth0", PeerNamespace: netlink.NsFd(int(fd.Fd()))})
	fd.Close()
	if err != nil {
		return fmt.Errorf("create veth %s/eth0: %w", port, err)
	}
	disableIPv6(d.ulNS, port)
	disableIPv6(s.ns, "eth0")
	p, err := ul.LinkByName(port)
	if err != nil {
		return err
	}
	if err := ul.LinkSetMaster(p, br); err != nil {
		return fmt.Errorf("attach %s to br0: %w", port, err)
	}
	if err := ul.LinkSetUp(p); err != nil {
		return err
	}
	if err := addAddr(h, "eth0", netip.PrefixFrom(s.underlay, d.subnet.Bits())); err != nil {
		return err
	}
	return linkUp(h, "eth0")
}

// newNS creates a namespace and records it for the cleanup, unless the name
// was someone else's.
func (d *demo) newNS(name string) error {
	err := newNamedNS(name)
	if errors.Is(err, errNSExists) {
		return fmt.Errorf("network namespace %s already exists; not touching it", name)
	}
	d.namespaces = append(d.namespaces, name)
	return err
}
