package config

import "testing"

func TestParseSize(t *testing.T) {
	good := map[string]Size{
		"0": 0, "1024": 1024, "512M": 512 * MiB, "512m": 512 * MiB, "1G": GiB, "64G": 64 * GiB,
		"1GiB": GiB, "1gb": GiB, "1.5G": GiB + 512*MiB, "2T": 2 * TiB, "4K": 4 * KiB, " 8M ": 8 * MiB, "100B": 100,
	}
	for in, want := range good {
		got, err := ParseSize(in)
		if err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "G", "-1G", "1X", "1.2.3G", "NaN", "Inf", "99999999999T", "1e400"} {
		if got, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) = %d, want an error", in, got)
		}
	}
	for _, s := range []Size{0, 100, 4 * KiB, 512 * MiB, GiB, 64 * GiB, 2 * TiB, GiB + 512*MiB} {
		back, err := ParseSize(s.String())
		if err != nil || back != s {
			t.Errorf("round trip of %d via %q gave %d, %v", s, s.String(), back, err)
		}
	}
}

func TestParsePort(t *testing.T) {
	good := map[string]Port{
		"80": {80, 80, "tcp"}, "5432/tcp": {5432, 5432, "tcp"}, "53/UDP": {53, 53, "udp"},
		"6000-6010/udp": {6000, 6010, "udp"}, "1-65535": {1, 65535, "tcp"},
	}
	for in, want := range good {
		got, err := ParsePort(in)
		if err != nil || got != want {
			t.Errorf("ParsePort(%q) = %+v, %v; want %+v", in, got, err, want)
		}
		if back, _ := ParsePort(got.String()); back != got {
			t.Errorf("round trip of %q failed: %q", in, got.String())
		}
	}
	for _, in := range []string{"", "0", "65536", "http", "80/icmp", "90-80", "80-", "-80", "80/tcp/udp"} {
		if got, err := ParsePort(in); err == nil {
			t.Errorf("ParsePort(%q) = %+v, want an error", in, got)
		}
	}
	if !(Port{80, 90, "tcp"}).Overlaps(Port{90, 95, "tcp"}) || (Port{80, 90, "tcp"}).Overlaps(Port{80, 90, "udp"}) {
		t.Error("Overlaps is wrong")
	}
}
