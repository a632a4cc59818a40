//go:build !linux

package capture

import "errors"

// OpenLive is available on Linux only (AF_PACKET).
func OpenLive(iface string) (Source, error) {
	return nil, errors.New("live capture needs Linux (AF_PACKET)")
}
