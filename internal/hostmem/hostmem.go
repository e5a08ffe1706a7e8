// Package hostmem measures what a VM costs its host, from /proc: the
// memory of its hypervisor and helper processes (virtiofsd) split into
// the guest's memory resident on the host and the processes' own, and
// the CPU time they used. The guest's memory is the one mapping of the
// hypervisor the size of the VM's memory that is not executable (QEMU's
// RAM block, anonymous or the memfd it shares with virtiofsd; a TCG
// translation buffer of the same size is executable). Every figure is a
// proportional set size (PSS: a page mapped by several processes is split
// between them), so the guest's pages that the hypervisor and virtiofsd
// both map count once, and pages KSM merged between VMs are shared out
// among them.
package hostmem

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Usage is a VM's memory on the host, in bytes.
type Usage struct {
	// Guest is the guest's memory resident on the host.
	Guest int64
	// Hypervisor is the hypervisor's own memory: its PSS without the
	// guest's.
	Hypervisor int64
	// Helpers is the helpers' (virtiofsd's) own memory, their PSS without
	// the guest's memory they map.
	Helpers int64
}

// Total is the whole cost.
func (u Usage) Total() int64 { return u.Guest + u.Hypervisor + u.Helpers }

// Overhead is what the VM costs beyond its guest's memory.
func (u Usage) Overhead() int64 { return u.Hypervisor + u.Helpers }

// Proc is the /proc a measure reads ("/proc" on a host; a directory of a
// test's).
type Proc string

// Memory measures the memory of a VM whose hypervisor is pid and whose
// helpers are helpers, its guest's memory being guestSize bytes.
func (p Proc) Memory(pid int, helpers []int, guestSize int64) (Usage, error) {
	hv, err := p.maps(pid, guestSize)
	if err != nil {
		return Usage{}, err
	}
	u := Usage{Guest: hv.guestPss, Hypervisor: hv.pss - hv.guestPss}
	for _, h := range helpers {
		m, err := p.maps(h, guestSize)
		if errors.Is(err, fs.ErrNotExist) {
			continue // exited meanwhile
		}
		if err != nil {
			return Usage{}, err
		}
		u.Guest += m.guestPss
		u.Helpers += m.pss - m.guestPss
	}
	return u, nil
}

// mapsSum is what a process's smaps add up to.
type mapsSum struct {
	pss, guestPss int64
}

// maps reads /proc/PID/smaps: the process's PSS, and the proportional
// size of its mapping of the guest's memory (a mapping guestSize long,
// not executable).
func (p Proc) maps(pid int, guestSize int64) (mapsSum, error) {
	b, err := os.ReadFile(filepath.Join(string(p), strconv.Itoa(pid), "smaps"))
	if err != nil {
		return mapsSum{}, err
	}
	var sum mapsSum
	guest := false
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if isHeader(f) {
			guest = isGuestMapping(f, guestSize)
			continue
		}
		if len(f) < 2 {
			continue
		}
		kb, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			continue
		}
		switch f[0] {
		case "Pss:":
			sum.pss += kb << 10
			if guest {
				sum.guestPss += kb << 10
			}
		}
	}
	if err := sc.Err(); err != nil {
		return mapsSum{}, fmt.Errorf("smaps of %d: %w", pid, err)
	}
	return sum, nil
}

// isHeader says whether smaps fields start a mapping ("start-end perms
// offset dev inode [path]").
func isHeader(f []string) bool {
	if len(f) < 5 || len(f[1]) != 4 {
		return false
	}
	a, b, ok := strings.Cut(f[0], "-")
	if !ok {
		return false
	}
	_, err1 := strconv.ParseUint(a, 16, 64)
	_, err2 := strconv.ParseUint(b, 16, 64)
	return err1 == nil && err2 == nil
}

// isGuestMapping says whether the mapping whose header is f holds the
// guest's memory: guestSize long, readable and writable, not executable.
func isGuestMapping(f []string, guestSize int64) bool {
	a, b, _ := strings.Cut(f[0], "-")
	start, _ := strconv.ParseUint(a, 16, 64)
	end, _ := strconv.ParseUint(b, 16, 64)
	perms := f[1]
	return int64(end-start) == guestSize && perms[0] == 'r' && perms[1] == 'w' && perms[2] != 'x'
}

// CPUSeconds is the CPU time (user and system) the processes pids used
// so far; a process that is gone counts nothing.
func (p Proc) CPUSeconds(pids ...int) (float64, error) {
	var ticks int64
	for _, pid := range pids {
		b, err := os.ReadFile(filepath.Join(string(p), strconv.Itoa(pid), "stat"))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return 0, err
		}
		// Fields after the command name (which may hold spaces): state is
		// the first, utime the 12th, stime the 13th.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			return 0, fmt.Errorf("unreadable stat of %d", pid)
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 13 {
			return 0, fmt.Errorf("short stat of %d", pid)
		}
		for _, s := range f[11:13] {
			n, err := strconv.ParseInt(s, 10, 64)
			if err != nil {
				return 0, fmt.Errorf("stat of %d: %w", pid, err)
			}
			ticks += n
		}
	}
	return float64(ticks) / clockTicks, nil
}

// clockTicks is USER_HZ, which /proc counts CPU time in: 100 on every
// Linux architecture microvm runs on.
const clockTicks = 100

// Helpers lists the processes of the program called name (its argv[0]'s
// base name) with an argument holding arg: a VM's helpers, by their
// socket path (virtiofsd, forked into its sandbox, is two processes).
func (p Proc) Helpers(name, arg string) ([]int, error) {
	entries, err := os.ReadDir(string(p))
	if err != nil {
		return nil, err
	}
	var out []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join(string(p), e.Name(), "cmdline"))
		if err != nil {
			continue // gone, or not ours to read
		}
		argv := bytes.Split(b, []byte{0})
		if filepath.Base(string(argv[0])) != name {
			continue
		}
		for _, a := range argv[1:] {
			if bytes.Contains(a, []byte(arg)) {
				out = append(out, pid)
				break
			}
		}
	}
	return out, nil
}

// Available is the host's available memory (MemAvailable of meminfo), in
// bytes.
func (p Proc) Available() (int64, error) {
	return p.meminfo("MemAvailable")
}

// meminfo is one field of /proc/meminfo, in bytes.
func (p Proc) meminfo(field string) (int64, error) {
	b, err := os.ReadFile(filepath.Join(string(p), "meminfo"))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || k != field {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 0 {
			break
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("meminfo %s: %w", field, err)
		}
		return kb << 10, nil
	}
	return 0, fmt.Errorf("meminfo has no %s", field)
}
