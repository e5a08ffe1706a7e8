package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"microvm.dev/microvm/internal/guest"
	"microvm.dev/microvm/internal/guestagent"
	"microvm.dev/microvm/internal/guestroot"
)

// prepareTemplate readies a template's guest to be saved and cloned:
// `/run/microvm/init template SERIAL`, run by the host once the template is
// ready. It reads the identity disk with that serial, freezes the workload
// (microvm-init's: its process group stopped; an image's own init: its
// services' cgroups frozen, this agent's left running) and leaves a
// watcher polling the disk: in a clone, the disk is the clone's, and the
// watcher applies its identity before the workload runs again
// (watchIdentity). It runs in the guest's root.
func prepareTemplate(serial string) error {
	var root guestroot.Root
	disk, err := findDisk(serial, "", 10*time.Second)
	if err != nil {
		return err
	}
	id, err := readIdentity(disk)
	if err != nil {
		return err
	}
	nic, err := defaultRouteLink()
	if err != nil {
		return err
	}
	if err := freezeWorkload(root); err != nil {
		return fmt.Errorf("freeze the workload: %w", err)
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	cmd := exec.Command(exe, "identity-watch", disk, id.Generation, nic.Attrs().HardwareAddr.String())
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		thawWorkload(root)
		return fmt.Errorf("start the identity watcher: %w", err)
	}
	cmd.Process.Release()
	fmt.Println("frozen: ready to be saved")
	return nil
}

// defaultRouteLink is the NIC of the default route.
func defaultRouteLink() (netlink.Link, error) {
	routes, err := netlink.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		return nil, fmt.Errorf("routes: %w", err)
	}
	for _, r := range routes {
		if r.Dst == nil || r.Dst.IP.IsUnspecified() {
			return netlink.LinkByIndex(r.LinkIndex)
		}
	}
	return nil, errors.New("no default route: no NIC to give a clone's address")
}

// watchIdentity is `init identity-watch DISK GENERATION MAC`: it reads the
// identity disk every 10 ms until its generation is another (the guest now
// runs as a clone), then applies the clone's identity: the clock, the
// kernel's random pool, the NIC's MAC, addresses and routes, the hostname,
// machine-id, SSH host key, authorized keys and the clone's own secret
// files; then it thaws the workload and reports the clone ready on the console.
func watchIdentity(disk, generation, mac string) error {
	var root guestroot.Root
	var id guest.Identity
	for {
		got, err := readIdentity(disk)
		if err == nil && got.Generation != generation {
			id = got
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := applyIdentity(root, id, mac); err != nil {
		toConsole(fmt.Sprintf("%s vm=%s error=%q", guest.FailedPrefix, id.Name, "take on the clone's identity: "+err.Error()))
		return err
	}
	if err := thawWorkload(root); err != nil {
		toConsole(fmt.Sprintf("%s vm=%s error=%q", guest.FailedPrefix, id.Name, "thaw the workload: "+err.Error()))
		return err
	}
	return toConsole(guestagent.ReadyLine(id.Name, uptime(), initName(), "running", nil) + " clone=" + id.Generation)
}

// applyIdentity makes the guest the clone id describes.
func applyIdentity(root guestroot.Root, id guest.Identity, mac string) error {
	if id.ClockNS > 0 {
		ts := unix.NsecToTimespec(id.ClockNS)
		if err := unix.ClockSettime(unix.CLOCK_REALTIME, &ts); err != nil {
			return fmt.Errorf("set the clock: %w", err)
		}
	}
	if err := reseed(id.Seed); err != nil {
		return err
	}
	if err := renumber(id, mac); err != nil {
		return err
	}
	if err := unix.Sethostname([]byte(id.Name)); err != nil {
		return fmt.Errorf("hostname: %w", err)
	}
	if err := root.Reidentify(id); err != nil {
		return err
	}
	return root.WriteSecrets(id.Secrets)
}

// reseed credits seed to the kernel's random pool and has it reseed its
// generator at once, so a clone's randomness is not the template's.
func reseed(seed []byte) error {
	if len(seed) == 0 {
		return errors.New("no random seed on the identity disk")
	}
	f, err := os.OpenFile("/dev/urandom", os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("reseed: %w", err)
	}
	defer f.Close()
	// struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[]; }
	buf := make([]byte, 8+len(seed))
	*(*int32)(unsafe.Pointer(&buf[0])) = int32(8 * len(seed))
	*(*int32)(unsafe.Pointer(&buf[4])) = int32(len(seed))
	copy(buf[8:], seed)
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.RNDADDENTROPY, uintptr(unsafe.Pointer(&buf[0]))); errno != 0 {
		return fmt.Errorf("reseed: RNDADDENTROPY: %w", errno)
	}
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.RNDRESEEDCRNG, 0); errno != 0 {
		return fmt.Errorf("reseed: RNDRESEEDCRNG: %w", errno)
	}
	return nil
}

// renumber gives the NIC (found by the template's MAC, oldMAC) the
// clone's MAC and network: taken down (its neighbours and routes go with
// it), its addresses removed, then configured as at boot.
func renumber(id guest.Identity, oldMAC string) error {
	old, err := net.ParseMAC(oldMAC)
	if err != nil {
		return fmt.Errorf("template MAC %q: %w", oldMAC, err)
	}
	mac, err := net.ParseMAC(id.Net.MAC)
	if err != nil {
		return fmt.Errorf("MAC %q: %w", id.Net.MAC, err)
	}
	link, err := linkByMAC(old, time.Second)
	if err != nil {
		return err
	}
	if err := netlink.LinkSetDown(link); err != nil {
		return fmt.Errorf("%s down: %w", link.Attrs().Name, err)
	}
	addrs, err := netlink.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("addresses of %s: %w", link.Attrs().Name, err)
	}
	for _, a := range addrs {
		if err := netlink.AddrDel(link, &a); err != nil {
			return fmt.Errorf("remove %s from %s: %w", a.IPNet, link.Attrs().Name, err)
		}
	}
	if err := netlink.LinkSetHardwareAddr(link, mac); err != nil {
		return fmt.Errorf("MAC of %s: %w", link.Attrs().Name, err)
	}
	return configureNetwork(id.Net)
}

// readIdentity reads the identity disk past the page cache: the disk under
// a resumed clone is not the one the template's guest read before.
func readIdentity(disk string) (guest.Identity, error) {
	fd, err := unix.Open(disk, unix.O_RDONLY|unix.O_DIRECT|unix.O_CLOEXEC, 0)
	if err != nil {
		return guest.Identity{}, fmt.Errorf("identity disk: %w", err)
	}
	defer unix.Close(fd)
	// O_DIRECT wants an aligned buffer: an anonymous mapping is.
	buf, err := unix.Mmap(-1, 0, guest.IdentityDiskSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return guest.Identity{}, err
	}
	defer unix.Munmap(buf)
	n, err := unix.Pread(fd, buf, 0)
	if err != nil {
		return guest.Identity{}, fmt.Errorf("identity disk: %w", err)
	}
	return guest.DecodeIdentity(buf[:n])
}

// freezeWorkload stops what runs in a template before it is saved:
// microvm-init's workload (its process group, SIGSTOP) or, under an
// image's own init, every service's and session's cgroup but this
// process's own (cgroup.freeze), recorded in FrozenPath.
func freezeWorkload(root guestroot.Root) error {
	if pid := root.WorkloadPID(); pid > 0 {
		return unix.Kill(-pid, unix.SIGSTOP)
	}
	own, _ := os.ReadFile("/proc/self/cgroup")
	ownPath := "/sys/fs/cgroup" + strings.TrimSpace(strings.TrimPrefix(string(own), "0::"))
	var frozen []string
	for _, slice := range []string{"system.slice", "user.slice"} {
		dirs, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", slice, "*"))
		for _, d := range dirs {
			if fi, err := os.Stat(d); err != nil || !fi.IsDir() || strings.HasPrefix(ownPath+"/", d+"/") {
				continue
			}
			if err := os.WriteFile(filepath.Join(d, "cgroup.freeze"), []byte("1"), 0); err != nil {
				continue // not a cgroup of its own (a file of the slice)
			}
			frozen = append(frozen, d)
		}
	}
	return os.WriteFile(root.Path(guestroot.FrozenPath), []byte(strings.Join(frozen, "\n")), 0o600)
}

// thawWorkload undoes freezeWorkload.
func thawWorkload(root guestroot.Root) error {
	if pid := root.WorkloadPID(); pid > 0 {
		return unix.Kill(-pid, unix.SIGCONT)
	}
	b, err := os.ReadFile(root.Path(guestroot.FrozenPath))
	if err != nil {
		return nil
	}
	var errs []error
	for _, d := range strings.Fields(string(b)) {
		if err := os.WriteFile(filepath.Join(d, "cgroup.freeze"), []byte("0"), 0); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
