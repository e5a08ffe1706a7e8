package guestroot

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"microvm.dev/microvm/internal/guest"
)

// udevDaemons are where an image keeps udev's daemon.
var udevDaemons = []string{"/lib/systemd/systemd-udevd", "/usr/lib/systemd/systemd-udevd", "/sbin/udevd", "/usr/sbin/udevd"}

// AnnounceDevices does for an image without udev what udev's coldplug
// does at every boot of a real machine: it records each device present at
// boot in udev's database as initialized and tagged "systemd" (the console
// TTYs, the disks, the network interfaces; what udev's 99-systemd.rules
// tags), so systemd's device units are plugged at once. Without it every
// unit that waits for a device (serial-getty@ttyS0 on dev-ttyS0.device)
// waits 90 s and fails, and the machine comes up degraded. An image with
// udev is left to its own. sysfs is the directory of /sys.
func (r Root) AnnounceDevices(sysfs string) error {
	for _, d := range udevDaemons {
		if _, err := guest.ResolveIn(string(r), d); err == nil {
			return nil
		}
	}
	var ids []string
	consoles, _ := os.ReadFile(sysfs + "/class/tty/console/active")
	for _, tty := range strings.Fields(string(consoles)) {
		if id, ok := devID("c", sysfs+"/class/tty/"+tty+"/dev"); ok {
			ids = append(ids, id)
		}
	}
	blocks, _ := filepath.Glob(sysfs + "/class/block/*")
	for _, b := range blocks {
		if id, ok := devID("b", b+"/dev"); ok {
			ids = append(ids, id)
		}
	}
	nets, _ := filepath.Glob(sysfs + "/class/net/*")
	for _, n := range nets {
		if filepath.Base(n) == "lo" {
			continue // udev does not tag the loopback for systemd
		}
		if b, err := os.ReadFile(n + "/ifindex"); err == nil {
			ids = append(ids, "n"+strings.TrimSpace(string(b)))
		}
	}
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	usec := ts.Nano() / 1000
	data, tags := r.Path("/run/udev/data"), r.Path("/run/udev/tags/systemd")
	for _, d := range []string{data, tags} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("announce devices: %w", err)
		}
	}
	for _, id := range ids {
		// udev's database format (version 1): initialized at I, the tag
		// among all (G) and current (Q) tags.
		rec := fmt.Sprintf("I:%d\nG:systemd\nQ:systemd\nV:1\n", usec)
		if err := os.WriteFile(filepath.Join(data, id), []byte(rec), 0o644); err != nil {
			return fmt.Errorf("announce devices: %w", err)
		}
		if err := os.WriteFile(filepath.Join(tags, id), nil, 0o644); err != nil {
			return fmt.Errorf("announce devices: %w", err)
		}
	}
	return nil
}

// devID is udev's id of the device whose major:minor is in file: "c4:64"
// for a character device, "b253:0" for a block device.
func devID(kind, file string) (string, bool) {
	b, err := os.ReadFile(file)
	if err != nil {
		return "", false
	}
	return kind + strings.TrimSpace(string(b)), true
}
