//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package main

// echoOff does nothing here: term.ReadPassword turns echo off as it reads.
func echoOff(int) (func(), error) { return func() {}, nil }
