package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"

	"microvm.dev/microvm/internal/guest"
)

// agentSpecPath is where, in the root, the agent finds what it serves.
const agentSpecPath = "/run/microvm/agent.json"

// agentSpec is what the agent needs: the VM's name and its SSH identity.
type agentSpec struct {
	Name string        `json:"name"`
	SSH  guest.SSHSpec `json:"ssh"`
}

// imageInit is the kind of init an image has, as it is set up.
type imageInit int

const (
	initSystemd imageInit = iota
	initBusybox
	initSysv
)

// kindOfInit tells systemd, busybox init and an inittab init (sysvinit)
// apart by where the image's init leads.
func kindOfInit(initPath string) imageInit {
	target, err := guest.ResolveIn(root, initPath)
	if err != nil {
		target = initPath
	}
	switch {
	case strings.Contains(target, "systemd"):
		return initSystemd
	case strings.Contains(target, "busybox"):
		return initBusybox
	}
	return initSysv
}

// prepareImageInit readies the root for the image's own init, in the
// root's memory layer only (the image is untouched): a stable machine-id;
// microvm's agent (SSH for exec, ssh and verify; the power button; the
// ready report) as a service of that init; Ctrl-Alt-Del powering off
// rather than rebooting. For systemd these are runtime units in
// /run/systemd/system; for inittab inits, lines of /etc/inittab.
func prepareImageInit(spec *guest.Spec, initPath string) error {
	if spec.MachineID != "" {
		if err := os.WriteFile(root+"/etc/machine-id", []byte(spec.MachineID+"\n"), 0o444); err != nil {
			return err
		}
	}
	b, err := json.Marshal(agentSpec{Name: spec.Name, SSH: spec.SSH})
	if err != nil {
		return err
	}
	if err := os.MkdirAll(root+"/run/microvm", 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(root+agentSpecPath, b, 0o600); err != nil {
		return err
	}
	switch kindOfInit(initPath) {
	case initSystemd:
		if err := announceDevices(); err != nil {
			return err
		}
		return systemdUnits()
	case initBusybox:
		return inittab("::respawn:/run/microvm/init agent", "::ctrlaltdel:/sbin/poweroff", true)
	default:
		return inittab("mv:2345:respawn:/run/microvm/init agent", "ca::ctrlaltdel:/sbin/shutdown -t1 -h -P now", false)
	}
}

// systemdUnits writes the agent's unit, wanted by sysinit.target so it
// answers early, masks the image's own sshd (the agent has port 22),
// maps Ctrl-Alt-Del to poweroff and skips kmod-static-nodes without kmod.
func systemdUnits() error {
	dir := root + "/run/systemd/system"
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
		if _, err := os.Stat(root + d + "/poweroff.target"); err == nil {
			return os.Symlink(d+"/poweroff.target", dir+"/ctrl-alt-del.target")
		}
	}
	return nil
}

// inittab adds the agent's respawn line to the image's /etc/inittab and
// makes Ctrl-Alt-Del power off. Without an inittab, busybox init runs its
// built-in one; that is written out first so the agent's line adds to it.
func inittab(agent, ctrlAltDel string, busybox bool) error {
	path := root + "/etc/inittab"
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
