package main

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"microvm.dev/microvm/internal/vmm"
	"microvm.dev/microvm/internal/vmm/backends"
)

// detachKey is Ctrl-], which leaves an interactive console.
const detachKey = 0x1d

func (a *app) consoleCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "console VM",
		Short: "Attach to a VM's serial console (Ctrl-] detaches)",
		Long: `Console attaches the terminal to the VM's serial console (one client at a
time); Ctrl-] detaches. Everything the console prints is also in
microvm logs VM. Without a terminal, standard input is sent as typed.`,
		Example: "  microvm console vm1",
		Args:    exactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			st, err := a.runningVM(args[0])
			if err != nil {
				return err
			}
			if b, err := backends.Get(st.Spec.Hypervisor); err == nil && !b.Capabilities().InteractiveConsole {
				return fmt.Errorf("%s runs on %s, whose serial console is a log only: follow it with microvm logs -f %s and log in with microvm ssh %s",
					args[0], b.Name(), args[0], args[0])
			}
			sock := vmm.Layout{RunDir: filepath.Dir(a.socket), VM: args[0]}.ConsoleSocket()
			conn, err := net.Dial("unix", sock)
			if err != nil {
				return fmt.Errorf("attach to the console of %s: %w (is another console attached?)", args[0], err)
			}
			defer conn.Close()
			in := os.Stdin
			tty := term.IsTerminal(int(in.Fd()))
			if tty {
				old, err := term.MakeRaw(int(in.Fd()))
				if err != nil {
					return err
				}
				defer term.Restore(int(in.Fd()), old)
				fmt.Fprintf(a.stderr, "attached to %s; Ctrl-] detaches\r\n", args[0])
			}
			done := make(chan struct{}, 2)
			go func() { io.Copy(a.stdout, conn); done <- struct{}{} }()
			go func() {
				buf := make([]byte, 1024)
				for {
					n, err := in.Read(buf)
					if n > 0 {
						if i := bytes.IndexByte(buf[:n], detachKey); i >= 0 {
							conn.Write(buf[:i])
							break
						}
						if _, werr := conn.Write(buf[:n]); werr != nil {
							break
						}
					}
					if err != nil {
						break
					}
				}
				done <- struct{}{}
			}()
			<-done
			if !tty {
				// Input was piped: give the VM a moment to answer it.
				time.Sleep(2 * time.Second)
			}
			return nil
		},
	}
}
