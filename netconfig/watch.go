package netconfig

import (
	"context"
	"fmt"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// WatchRouteDeletes calls notify whenever a route of ours disappears (someone
// ran `ip route del`, or its link went away), or someone deletes a nexthop
// object of ours (`ip nexthop del`: its groups shrank), so the caller can
// repair it at once rather than at the next periodic check. The kernel
// says nothing when a link going down or away takes nexthops with it; the
// periodic check repairs those. If the
// subscription breaks (socket buffer overrun), the watch ends quietly:
// callers keep a periodic check as the backstop. notify runs on the
// watcher's goroutines and must not block. The watch ends when ctx is done.
// It watches the calling thread's network namespace.
func WatchRouteDeletes(ctx context.Context, notify func()) error {
	updates := make(chan netlink.RouteUpdate, 64)
	done := make(chan struct{})
	if err := netlink.RouteSubscribeWithOptions(updates, done, netlink.RouteSubscribeOptions{}); err != nil {
		close(done)
		return fmt.Errorf("subscribe to route changes: %w", err)
	}
	watchNexthopDeletes(ctx, notify)
	go func() {
		for {
			select {
			case <-ctx.Done():
				close(done)
				// Unblock netlink's receiver until it notices the close.
				go func() {
					for range updates {
					}
				}()
				return
			case u, ok := <-updates:
				if !ok {
					return
				}
				if u.Type == unix.RTM_DELROUTE && u.Protocol == RouteProtocol {
					notify()
				}
			}
		}
	}()
	return nil
}

// watchNexthopDeletes is WatchRouteDeletes for nexthop objects; a kernel
// without them has nothing to watch.
func watchNexthopDeletes(ctx context.Context, notify func()) {
	s, err := nl.Subscribe(unix.NETLINK_ROUTE, unix.RTNLGRP_NEXTHOP)
	if err != nil {
		return
	}
	stop := context.AfterFunc(ctx, s.Close)
	go func() {
		defer func() {
			if stop() { // ctx still running: close it here
				s.Close()
			}
		}()
		for {
			msgs, _, err := s.Receive()
			if err != nil {
				return // closed, or overrun: the periodic check takes over
			}
			for _, m := range msgs {
				if m.Header.Type == unix.RTM_DELNEXTHOP && len(m.Data) >= unix.SizeofNhmsg && m.Data[2] == byte(RouteProtocol) {
					notify()
				}
			}
		}
	}()
}
