package main

import (
	"encoding/binary"
	"io"
	"os"
	"path/filepath"
	"time"
)

// Linux input event constants.
const (
	evKey     = 1
	keyPower  = 116
	eventSize = 24 // struct input_event on 64-bit: timeval (16) + type, code (2+2) + value (4)
)

// watchPowerButton calls fn when any input device reports the power key
// (the ACPI power button QEMU presses on system_powerdown). Devices are
// rescanned for a while, since their nodes may appear after boot.
func watchPowerButton(fn func(string)) {
	go func() {
		watched := map[string]bool{}
		for i := 0; i < 30; i++ {
			devs, _ := filepath.Glob("/dev/input/event*")
			for _, d := range devs {
				if !watched[d] {
					watched[d] = true
					go watchDevice(d, fn)
				}
			}
			time.Sleep(time.Second)
		}
	}()
}

func watchDevice(path string, fn func(string)) {
	f, err := os.Open(path)
	if err != nil {
		return
	}
	defer f.Close()
	buf := make([]byte, eventSize)
	for {
		if _, err := io.ReadFull(f, buf); err != nil {
			return
		}
		typ := binary.LittleEndian.Uint16(buf[16:18])
		code := binary.LittleEndian.Uint16(buf[18:20])
		value := int32(binary.LittleEndian.Uint32(buf[20:24]))
		if typ == evKey && code == keyPower && value == 1 {
			fn("power button")
		}
	}
}
