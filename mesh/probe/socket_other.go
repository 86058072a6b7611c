//go:build !linux

package probe

import (
	"context"
	"net"
	"net/netip"
	"time"
)

// oobSize: no control messages are asked for here.
const oobSize = 0

// listen opens a plain UDP socket: no TTL 255 on send and no TTL on
// receive, so CheckTTL has nothing to check (parseOOB reports -1), and no
// kernel receive timestamps.
func listen(ctx context.Context, local netip.Addr, port uint16) (*net.UDPConn, error) {
	network := "udp4"
	if local.Is6() {
		network = "udp6"
	}
	pc, err := (&net.ListenConfig{}).ListenPacket(ctx, network, netip.AddrPortFrom(local, port).String())
	if err != nil {
		return nil, err
	}
	return pc.(*net.UDPConn), nil
}

func parseOOB([]byte) (int, time.Time) { return -1, time.Time{} }

// drain does nothing here: the reader goroutine is the only reader.
func drain(*net.UDPConn, []byte, []byte, func([]byte, netip.Addr, int, time.Time)) {}
