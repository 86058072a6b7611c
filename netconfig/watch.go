package netconfig

import (
	"context"
	"fmt"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// WatchRouteDeletes calls notify whenever a route of ours disappears (someone
// ran `ip route del`, or its link went away), so the caller can repair it at
// once rather than at the next periodic check. If the subscription breaks
// (socket buffer overrun), the watch ends quietly: callers keep a periodic
// check as the backstop. notify runs on the watcher's
// goroutine and must not block. The watch ends when ctx is done.
func WatchRouteDeletes(ctx context.Context, notify func()) error {
	updates := make(chan netlink.RouteUpdate, 64)
	done := make(chan struct{})
	if err := netlink.RouteSubscribeWithOptions(updates, done, netlink.RouteSubscribeOptions{}); err != nil {
		close(done)
		return fmt.Errorf("subscribe to route changes: %w", err)
	}
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
