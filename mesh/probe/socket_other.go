//go:build !linux

package probe

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"time"
)

// oobSize: no control messages are asked for here.
const oobSize = 0

// socket is one plain UDP socket here: no TTL 255 on send and no TTL on
// receive, so CheckTTL has nothing to check (parseOOB reports -1), no
// kernel receive timestamps, and no bulk socket: the reader goroutine
// handles every packet as it arrives.
type socket struct {
	urgent  *net.UDPConn
	bulkErr error
}

func openSocket(ctx context.Context, local netip.Addr, port uint16) (*socket, error) {
	network := "udp4"
	if local.Is6() {
		network = "udp6"
	}
	pc, err := (&net.ListenConfig{}).ListenPacket(ctx, network, netip.AddrPortFrom(local, port).String())
	if err != nil {
		return nil, err
	}
	return &socket{urgent: pc.(*net.UDPConn), bulkErr: errors.New("not on this platform")}, nil
}

func (s *socket) send(b []byte, dst netip.AddrPort) error {
	_, err := s.urgent.WriteToUDPAddrPort(b, dst)
	return err
}

// drain and drainBulk do nothing here: the reader goroutine is the only
// reader.
func (s *socket) drain([]byte, []byte, rxFunc)     {}
func (s *socket) drainBulk([]byte, []byte, rxFunc) {}
func (s *socket) close()                           { s.urgent.Close() }

func parseOOB([]byte) (int, time.Time) { return -1, time.Time{} }
