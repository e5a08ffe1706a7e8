// Package config is the model of microvm's declarative file: the YAML types,
// a strict decoder that reports every problem with file, line and key path,
// the merge of defaults into each VM, the addressing derived per VM (subnet,
// gateway, interface names, MAC) and the validation that must pass before any
// part of a file is applied.
//
// The entry point is Load (or Parse for bytes already read); it returns a
// resolved *Config or a Problems error listing everything that is wrong.
package config
