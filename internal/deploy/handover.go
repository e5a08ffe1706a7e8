package deploy

import (
	"context"
	"fmt"

	"microvm.dev/microvm/internal/config"
	"microvm.dev/microvm/internal/generation"
)

// handOver moves the VMs whose host: generation g changes, between this
// host and the file's peers, before g is applied: a VM that ran here and
// is another peer's in g is moved there with its data (a move that fails
// fails the deploy, which rolls back: the VM runs here again); a VM that
// is this host's in g and ran on another peer is expected, and left out
// of the applies until its move comes, rather than made again on empty
// volumes. Without peers, or without a previous generation, nothing
// moves: a host: change then stops the VM on the old host (its volumes
// kept) and makes it anew on the new one.
func (e *Engine) handOver(ctx context.Context, g, prev *generation.Generation) error {
	if prev == nil || prev.Number == g.Number || e.o.HostName == "" || e.d.HostName() == "" {
		return nil
	}
	now, err := e.d.Parse(g.Path, []byte(g.Config))
	if err != nil {
		return err
	}
	was, err := e.d.Parse(prev.Path, []byte(prev.Config))
	if err != nil {
		return nil // the last generation no longer parses here: nothing to hand over
	}
	me := e.o.HostName
	for _, vm := range now.VMs {
		old := was.VM(vm.Name)
		if old == nil || old.Host == vm.Host {
			continue
		}
		_, peer := now.Peers[vm.Host]
		switch {
		case old.Host == me && vm.Host != me && peer:
			e.log.Info("moving a VM whose host changed", "vm", vm.Name, "to", vm.Host, "generation", g.Number)
			if _, err := e.d.Move(ctx, vm.Name, vm.Host, ""); err != nil {
				return fmt.Errorf("generation %d gives %s to %s: %w", g.Number, vm.Name, vm.Host, err)
			}
		case vm.Host == me && old.Host != me && hasPeer(was, old.Host):
			if err := e.d.ExpectMove(vm.Name, old.Host); err != nil {
				return err
			}
		}
	}
	return nil
}

func hasPeer(cfg *config.Config, host string) bool {
	_, ok := cfg.Peers[host]
	return ok
}
