package netconfig

import (
	"errors"
	"fmt"
	"runtime"

	"github.com/vishvananda/netns"
)

// OnThread runs f on a fresh goroutine locked to its OS thread, then puts
// the thread back into the network namespace it started in. f may switch the
// thread's namespace (netns.Set, netns.NewNamed): that is what it is for. If
// the thread cannot go back, it stays locked and ends with its goroutine, so
// no other goroutine ever runs in a namespace it did not ask for.
//
// This is the one copy of the locked-thread dance in the tree: the netlink
// handle's sysctls, the demo and the test namespaces use it.
func OnThread(f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("read this thread's network namespace: %w", err)
			return
		}
		defer orig.Close()
		ferr := f()
		if err := netns.Set(orig); err != nil {
			errc <- errors.Join(ferr, fmt.Errorf("return to the original network namespace: %w", err))
			return // still locked: the thread exits with this goroutine
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// InNamespace runs f on a fresh OS thread inside the namespace ns (see
// OnThread). Sockets and files f opens stay in that namespace for their
// whole life; /proc/sys/net shows the namespace of the thread that opens it.
func InNamespace(ns netns.NsHandle, f func() error) error {
	return OnThread(func() error {
		if err := netns.Set(ns); err != nil {
			return fmt.Errorf("enter network namespace: %w", err)
		}
		return f()
	})
}
