package demo

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"time"
)

// listen starts an echo server on the site's prefix address, inside its
// namespace.
func (d *demo) listen(s *site) error {
	var ln net.Listener
	err := inNS(s.ns, func() (err error) {
		ln, err = net.Listen("tcp4", netip.AddrPortFrom(s.host, echoPort).String())
		return err
	})
	if err != nil {
		return fmt.Errorf("%s: echo server: %w", s.name, err)
	}
	d.listeners = append(d.listeners, ln)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if !d.track(c) {
				c.Close()
				return
			}
			go func() {
				defer d.untrack(c)
				_ = c.SetDeadline(time.Now().Add(echoTimeout))
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return nil
}

func (d *demo) track(c net.Conn) bool {
	d.connsMu.Lock()
	defer d.connsMu.Unlock()
	if d.conns == nil {
		return false // cleaning up
	}
	d.conns[c] = struct{}{}
	return true
}

func (d *demo) untrack(c net.Conn) {
	c.Close()
	d.connsMu.Lock()
	defer d.connsMu.Unlock()
	delete(d.conns, c)
}

// echo connects from from's prefix address to to's echo server through the
// tunnel, sends a line and checks it comes back.
func (d *demo) echo(ctx context.Context, from, to *site) error {
	fail := func(err error) error {
		return fmt.Errorf("%s → %s (%s → %s): %w", from.name, to.name, from.host, to.host, err)
	}
	dev, err := routeDev(from.ns, to.host)
	if err != nil {
		return fail(err)
	}
	if dev != from.iface {
		return fail(fmt.Errorf("the route to %s leads to %s, not to the WireGuard interface %s", to.host, dev, from.iface))
	}
	msg := []byte(fmt.Sprintf("hello %s, this is %s\n", to.name, from.name))
	start := time.Now()
	var c net.Conn
	err = inNS(from.ns, func() (err error) {
		dl := net.Dialer{LocalAddr: &net.TCPAddr{IP: from.host.AsSlice()}, Timeout: echoTimeout}
		c, err = dl.DialContext(ctx, "tcp4", netip.AddrPortFrom(to.host, echoPort).String())
		return err
	})
	if err != nil {
		return fail(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(echoTimeout))
	if _, err := c.Write(msg); err != nil {
		return fail(err)
	}
	back := make([]byte, len(msg))
	if _, err := io.ReadFull(c, back); err != nil {
		return fail(err)
	}
	if !bytes.Equal(back, msg) {
		return fail(fmt.Errorf("echo came back as %q", back))
	}
	el := time.Since(start)
	d.say("%s → %s: %s → %s over WireGuard, echo ok in %.1f ms", from.name, to.name, from.host, to.host, float64(el.Microseconds())/1000)
	return nil
}
