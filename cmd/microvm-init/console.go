package main

import (
	"os"
	"strings"
	"time"
)

// consoleTTY is the serial console the kernel was given (console=…), e.g.
// ttyS0 or ttyAMA0, or "" when there is none.
func consoleTTY() string {
	b, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		return ""
	}
	tty := ""
	for _, f := range strings.Fields(string(b)) {
		if v, ok := strings.CutPrefix(f, "console="); ok {
			tty, _, _ = strings.Cut(v, ",")
		}
	}
	return tty
}

// serveConsole keeps a login shell of the VM's root on the serial console
// (what `microvm console` attaches to), starting a new one when it exits.
func (in *initd) serveConsole() {
	tty := consoleTTY()
	if tty == "" {
		return
	}
	if !in.root.HasShell() {
		return
	}
	go func() {
		for !in.stopping.Load() {
			f, err := os.OpenFile("/dev/"+tty, os.O_RDWR, 0)
			if err != nil {
				logf("console shell: %v", err)
				return
			}
			cmd := in.root.Command([]string{"/bin/sh", "-l"}, map[string]string{"TERM": "linux"}, "")
			cmd.Stdin, cmd.Stdout, cmd.Stderr = f, f, f
			cmd.SysProcAttr.Setctty = true
			cmd.SysProcAttr.Ctty = 0
			err = cmd.Start()
			f.Close()
			if err != nil {
				logf("console shell: %v", err)
				return
			}
			in.consolePID.Store(int64(cmd.Process.Pid))
			<-in.procs.wait(cmd.Process.Pid)
			in.consolePID.Store(0)
			time.Sleep(200 * time.Millisecond)
		}
	}()
}
