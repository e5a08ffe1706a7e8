package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"microvm.dev/microvm/internal/config"
	"microvm.dev/microvm/internal/launch"
	"microvm.dev/microvm/internal/supervisor"
)

// templates makes the saved states clones start from, one template at a
// time: a clone's launch waits while its template is booted and saved.
type templates struct {
	env launch.Env
	log *slog.Logger
	// lookup is the applied file's VM of that name (nil: none).
	lookup func(name string) *config.VM
	locks  keyedMutex
}

// ensure makes sure the template name has a saved state its clones may
// start from, booting and saving it when it has none, its spec changed
// or its files were damaged (dropped first when drop is set: a clone
// found it unusable).
func (t *templates) ensure(ctx context.Context, clone, name string, drop bool) error {
	lock := t.locks.lock(name)
	defer lock.Unlock()
	vm := t.lookup(name)
	if vm == nil || !vm.Template {
		return fmt.Errorf("vms.%s.from: %s is not a template of the applied file", clone, name)
	}
	if drop {
		launch.DropTemplate(t.env, name)
	}
	_, _, err := launch.TemplateState(t.env, vm)
	if err == nil {
		return nil
	}
	t.log.Info("making the template's saved state", "vm", name, "why", err)
	rec, err := launch.MakeTemplate(ctx, t.env, vm, supervisor.ReadyTimeout)
	if err != nil {
		return err
	}
	t.log.Info("template saved", "vm", name, "boot_seconds", rec.BootSeconds, "save_seconds", rec.SaveSeconds)
	return nil
}

// prepareClone prepares the clone vm from its template's saved state,
// made first when it has to be, and made again once when the state turns
// out unusable for it (the template's image pulled again since, say).
func (t *templates) prepareClone(ctx context.Context, vm *config.VM, prepare func() (*launch.Prepared, error)) (*launch.Prepared, error) {
	if err := t.ensure(ctx, vm.Name, vm.From, false); err != nil {
		return nil, err
	}
	p, err := prepare()
	if !errors.Is(err, launch.ErrTemplateStale) {
		return p, err
	}
	if err := t.ensure(ctx, vm.Name, vm.From, true); err != nil {
		return nil, err
	}
	return prepare()
}
