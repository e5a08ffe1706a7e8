package guestroot

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"

	"microvm.dev/microvm/internal/guest"
)

// AgentSpecPath is where, in the root, the agent finds what it serves.
const AgentSpecPath = "/run/microvm/agent.json"

// AgentSpec is what the agent needs: the VM's name and its SSH identity.
type AgentSpec struct {
	Name string        `json:"name"`
	SSH  guest.SSHSpec `json:"ssh"`
}

// InitKind is the kind of init an image has, as it is set up.
type InitKind int

// The kinds of init.
const (
	Systemd InitKind = iota
	Busybox
	Sysv // an inittab init: sysvinit
)

// KindOfInit tells systemd, busybox init and an inittab init (sysvinit)
// apart by where the image's init leads.
func (r Root) KindOfInit(initPath string) InitKind {
	target, err := guest.ResolveIn(string(r), initPath)
	if err != nil {
		target = initPath
	}
	switch {
	case strings.Contains(target, "systemd"):
		return Systemd
	case strings.Contains(target, "busybox"):
		return Busybox
	}
	return Sysv
}

// PrepareImageInit readies the root for the image's own init, in the
// root's memory layer only (the image is untouched): a stable machine-id;
// microvm's agent (SSH for exec, ssh and verify; the power button; the
// ready report) as a service of that init; Ctrl-Alt-Del powering off
// rather than rebooting. For systemd these are runtime units in
// /run/systemd/system, and the devices present at boot (as sysfs, the
// directory of /sys, lists them) announced in udev's database where the
// image has no udev; for inittab inits, lines of /etc/inittab.
func (r Root) PrepareImageInit(spec *guest.Spec, initPath, sysfs string) error {
	if spec.MachineID != "" {
		if err := os.WriteFile(r.Path("/etc/machine-id"), []byte(spec.MachineID+"\n"), 0o444); err != nil {
			return err
		}
	}
	b, err := json.Marshal(AgentSpec{Name: spec.Name, SSH: spec.SSH})
	if err != nil {
		return err
	}
	if err := os.MkdirAll(r.Path("/run/microvm"), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(r.Path(AgentSpecPath), b, 0o600); err != nil {
		return err
	}
	switch r.KindOfInit(initPath) {
	case Systemd:
		if err := r.AnnounceDevices(sysfs); err != nil {
			return err
		}
		return r.systemdUnits()
	case Busybox:
		return r.inittab("::respawn:/run/microvm/init agent", "::ctrlaltdel:/sbin/poweroff", true)
	default:
		return r.inittab("mv:2345:respawn:/run/microvm/init agent", "ca::ctrlaltdel:/sbin/shutdown -t1 -h -P now", false)
	}
}

// systemdUnits writes the agent's unit, wanted by sysinit.target so it
// answers early, masks the image's own sshd (the agent has port 22),
// maps Ctrl-Alt-Del to poweroff and skips kmod-static-nodes without kmod.
func (r Root) systemdUnits() error {
	dir := r.Path("/run/systemd/system")
	if err := os.MkdirAll(dir+"/sysinit.target.wants", 0o755); err != nil {
		return err
	}
	unit := `[Unit]
Description=microvm agent: SSH for microvm exec, ssh and verify; the power button; readiness
DefaultDependencies=no
Before=sysinit.target shutdown.target
Conflicts=shutdown.target

[Service]
Type=exec
ExecStart=/run/microvm/init agent
Restart=always
RestartSec=1
KillMode=process
`
	if err := os.WriteFile(dir+"/microvm-agent.service", []byte(unit), 0o644); err != nil {
		return err
	}
	if err := os.Symlink("../microvm-agent.service", dir+"/sysinit.target.wants/microvm-agent.service"); err != nil && !os.IsExist(err) {
		return err
	}
	for _, u := range []string{"ssh.service", "ssh.socket", "sshd.service"} {
		os.Symlink("/dev/null", dir+"/"+u)
	}
	// The kernel's module tree (with its modules.devname) is there in every
	// VM, but an image without a kernel package may lack kmod, which
	// kmod-static-nodes runs: it is skipped then, as when there is no
	// tree, rather than failed.
	if err := os.MkdirAll(dir+"/kmod-static-nodes.service.d", 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(dir+"/kmod-static-nodes.service.d/microvm.conf",
		[]byte("[Unit]\nConditionPathExists=|/bin/kmod\nConditionPathExists=|/usr/bin/kmod\nConditionPathExists=|/sbin/kmod\n"), 0o644); err != nil {
		return err
	}
	for _, d := range []string{"/usr/lib/systemd/system", "/lib/systemd/system"} {
		if _, err := os.Stat(r.Path(d + "/poweroff.target")); err == nil {
			return os.Symlink(d+"/poweroff.target", dir+"/ctrl-alt-del.target")
		}
	}
	return nil
}

// inittab adds the agent's respawn line to the image's /etc/inittab and
// makes Ctrl-Alt-Del power off. Without an inittab, busybox init runs its
// built-in one; that is written out first so the agent's line adds to it.
func (r Root) inittab(agent, ctrlAltDel string, busybox bool) error {
	path := r.Path("/etc/inittab")
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) && busybox {
		b = []byte("::sysinit:/etc/init.d/rcS\n::askfirst:-/bin/sh\n::restart:/sbin/init\n::shutdown:/bin/umount -a -r\n::shutdown:/sbin/swapoff -a\n")
	} else if err != nil {
		return fmt.Errorf("init: image: %w", err)
	}
	var out []string
	for _, line := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
		if f := strings.Split(line, ":"); len(f) >= 4 && f[2] == "ctrlaltdel" && !strings.HasPrefix(strings.TrimSpace(line), "#") {
			line = ctrlAltDel
		}
		out = append(out, line)
	}
	out = append(out, "# added by microvm-init in the VM's memory layer", agent)
	if !strings.Contains(strings.Join(out, "\n"), ctrlAltDel) {
		out = append(out, ctrlAltDel)
	}
	os.Remove(path) // may be a link into the image
	return os.WriteFile(path, []byte(strings.Join(out, "\n")+"\n"), 0o644)
}
