package hostnet

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Host is a handle on one network namespace: the process's own, or one named
// by path (tests and the fleet command run microvm's network in a namespace
// that stands in for the host).
type Host struct {
	nl     *netlink.Handle
	nsPath string
}

// Open returns a handle on the namespace at nsPath ("" for the process's own).
func Open(nsPath string) (*Host, error) {
	if nsPath == "" {
		nl, err := netlink.NewHandle()
		if err != nil {
			return nil, fmt.Errorf("netlink: %w", err)
		}
		return &Host{nl: nl}, nil
	}
	ns, err := netns.GetFromPath(nsPath)
	if err != nil {
		return nil, fmt.Errorf("open network namespace %s: %w", nsPath, err)
	}
	defer ns.Close()
	nl, err := netlink.NewHandleAt(ns)
	if err != nil {
		return nil, fmt.Errorf("netlink in %s: %w", nsPath, err)
	}
	return &Host{nl: nl, nsPath: nsPath}, nil
}

// Close releases the handle.
func (h *Host) Close() { h.nl.Close() }

// NetNS is the namespace path the handle works in ("" for the process's own).
func (h *Host) NetNS() string { return h.nsPath }

// Do runs fn on an OS thread that has entered the handle's namespace, for
// work that netlink cannot do by handle (sysctls under /proc/sys/net).
func (h *Host) Do(fn func() error) error {
	if h.nsPath == "" {
		return fn()
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return fmt.Errorf("current network namespace: %w", err)
	}
	defer orig.Close()
	target, err := netns.GetFromPath(h.nsPath)
	if err != nil {
		return fmt.Errorf("open network namespace %s: %w", h.nsPath, err)
	}
	defer target.Close()
	if err := netns.Set(target); err != nil {
		return fmt.Errorf("enter network namespace %s: %w", h.nsPath, err)
	}
	ferr := fn()
	if err := netns.Set(orig); err != nil {
		// The thread is stuck in the other namespace; it must not be reused.
		panic(fmt.Sprintf("hostnet: cannot return to the original network namespace: %v", err))
	}
	return ferr
}

// OpenTAP opens the persistent TAP called name in the handle's namespace
// (multi-queue off, no packet information, with virtio-net headers, as the
// TAPs are made), for a hypervisor that is handed the descriptor instead
// of opening /dev/net/tun itself.
func (h *Host) OpenTAP(name string) (*os.File, error) {
	var f *os.File
	err := h.Do(func() error {
		fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		ifr, err := unix.NewIfreq(name)
		if err != nil {
			unix.Close(fd)
			return err
		}
		ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
		if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
			unix.Close(fd)
			return err
		}
		f = os.NewFile(uintptr(fd), "/dev/net/tun:"+name)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("open TAP %s: %w", name, err)
	}
	return f, nil
}

// SysctlSetting is one sysctl and its wanted value.
type SysctlSetting struct {
	Name, Value string
}

// Sysctls sets every setting that differs, entering the namespace once, and
// returns the ones it changed. A missing sysctl is an error wrapping
// fs.ErrNotExist.
func (h *Host) Sysctls(settings []SysctlSetting) ([]SysctlSetting, error) {
	return h.sysctls(settings, nil)
}

// sysctls is Sysctls; with dry (a dry run's settings so far, by name) it
// writes nothing but dry, and reads a setting of an interface that is not
// there (one the dry run would make) as the namespace's default for new
// interfaces.
func (h *Host) sysctls(settings []SysctlSetting, dry map[string]string) ([]SysctlSetting, error) {
	var changed []SysctlSetting
	err := h.Do(func() error {
		for _, st := range settings {
			cur, err := readSysctl(st.Name, dry)
			if err != nil {
				return err
			}
			if cur == st.Value {
				continue
			}
			if dry != nil {
				dry[st.Name] = st.Value
				changed = append(changed, st)
				continue
			}
			p := filepath.Join("/proc/sys", strings.ReplaceAll(st.Name, ".", "/"))
			if err := os.WriteFile(p, []byte(st.Value), 0o644); err != nil {
				return fmt.Errorf("sysctl %s=%s: %w", st.Name, st.Value, err)
			}
			changed = append(changed, st)
		}
		return nil
	})
	return changed, err
}

// readSysctl reads the setting name (in the namespace entered): the dry
// run's value when it set one (dry not nil), a new interface's default
// when a dry run reads a setting of an interface not there yet.
func readSysctl(name string, dry map[string]string) (string, error) {
	if v, ok := dry[name]; ok {
		return v, nil
	}
	cur, err := os.ReadFile(filepath.Join("/proc/sys", strings.ReplaceAll(name, ".", "/")))
	if dry != nil && errors.Is(err, os.ErrNotExist) {
		if parts := strings.Split(name, "."); len(parts) == 5 && parts[2] == "conf" {
			parts[3] = "default"
			return readSysctl(strings.Join(parts, "."), nil)
		}
	}
	if err != nil {
		return "", fmt.Errorf("sysctl %s: %w", name, err)
	}
	return strings.TrimSpace(string(cur)), nil
}

// KeepRAWithForwarding makes the uplink keep taking router advertisements
// once IPv6 forwarding is on (accept_ra 1, which forwarding turns into
// "ignore", becomes 2), so a host that configures its own uplink by SLAAC
// keeps its address and default route. Any other value is the admin's and
// left alone. It says whether it changed the setting (with dry, whether
// it would, changing nothing).
func (h *Host) KeepRAWithForwarding(uplink string, dry bool) (bool, error) {
	changed := false
	err := h.Do(func() error {
		p := filepath.Join("/proc/sys/net/ipv6/conf", uplink, "accept_ra")
		cur, err := os.ReadFile(p)
		if err != nil || strings.TrimSpace(string(cur)) != "1" {
			return nil // no IPv6 on it, or not the default
		}
		if dry {
			changed = true
			return nil
		}
		if err := os.WriteFile(p, []byte("2"), 0o644); err != nil {
			return fmt.Errorf("sysctl net.ipv6.conf.%s.accept_ra=2: %w", uplink, err)
		}
		changed = true
		return nil
	})
	return changed, err
}
