package demo

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// cleanup removes everything the demo created: agents, namespaces (their
// links, addresses and routes go with them), WireGuard sockets, the work
// directory.
func (d *demo) cleanup(ctx context.Context) error {
	if ctx.Err() != nil {
		d.printf("\ninterrupted: cleaning up\n")
	}
	d.printf("\ncleanup: stop the agents, delete the namespaces (their links, addresses and routes go with them), remove the work directory\n")
	d.closeTraffic()
	stopped := d.stopAgents()
	errs := d.removeCreated()
	for _, e := range errs {
		d.logf("cleanup: %v", e)
	}
	d.say("stopped %d agents, deleted %d namespaces (%s), removed the WireGuard sockets", stopped, len(d.namespaces), "dcmdemo-"+d.id+"-*")
	if d.o.KeepLogs {
		d.say("agent logs kept in %s (keys and state removed); delete it when done", d.dir)
	} else {
		d.say("removed %s", d.dir)
	}
	if len(errs) > 0 {
		return fmt.Errorf("cleanup: %w", errors.Join(errs...))
	}
	if ctx.Err() == nil {
		d.printf("done in %s\n", seconds(time.Since(d.begin)))
	}
	return nil
}

// closeTraffic closes the echo servers and their connections.
func (d *demo) closeTraffic() {
	for _, ln := range d.listeners {
		ln.Close()
	}
	d.connsMu.Lock()
	for c := range d.conns {
		c.Close()
	}
	d.conns = nil
	d.connsMu.Unlock()
}

// stopAgents sends every running agent SIGTERM, kills those still running
// after stopGrace, and returns how many it stopped.
func (d *demo) stopAgents() int {
	var running []*site
	for _, s := range d.sites {
		if s.agent == nil {
			continue
		}
		select {
		case <-s.done:
		default:
			_ = s.agent.Process.Signal(syscall.SIGTERM)
			running = append(running, s)
		}
	}
	deadline := time.After(stopGrace)
wait:
	for _, s := range running {
		select {
		case <-s.done:
		case <-deadline:
			for _, r := range running {
				select {
				case <-r.done:
				default:
					d.logf("%s agent did not stop within %s of SIGTERM: killing it", r.name, stopGrace)
					_ = r.agent.Process.Kill()
				}
			}
			break wait
		}
	}
	for _, s := range running {
		<-s.done
	}
	return len(running)
}

// removeCreated deletes the namespaces, the embedded devices' sockets and
// the work directory (all but the logs, with KeepLogs).
func (d *demo) removeCreated() []error {
	var errs []error
	for i := len(d.namespaces) - 1; i >= 0; i-- {
		if err := deleteNamedNS(d.namespaces[i]); err != nil {
			errs = append(errs, err)
		}
	}
	for _, s := range d.sites {
		// An embedded device's UAPI socket; its agent normally removes it.
		if err := os.Remove("/var/run/wireguard/" + s.iface + ".sock"); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if !d.o.KeepLogs {
		if err := os.RemoveAll(d.dir); err != nil {
			errs = append(errs, err)
		}
		return errs
	}
	entries, err := os.ReadDir(d.dir)
	if err != nil {
		errs = append(errs, err)
	}
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".log") {
			if err := os.RemoveAll(filepath.Join(d.dir, e.Name())); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errs
}
