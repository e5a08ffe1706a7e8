package config

import "reflect"

// reflectValueOf returns the addressable value a pointer points to.
func reflectValueOf(p any) reflect.Value { return reflect.ValueOf(p).Elem() }
