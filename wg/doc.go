// Package wg owns everything WireGuard in dcmesh: key types that cannot leak,
// key files on disk, the WireGuard device (a kernel link or an embedded
// wireguard-go device behind the same interface), and peer reconciliation as
// minimal diffs through wgctrl.
//
// What it does not do: addresses, MTU, link state and routes belong to package
// netconfig; deciding which peers a site should have belongs to package mesh.
// Package wg imports no other dcmesh package.
//
// Sessions are precious. Apply never sets ReplacePeers: a peer whose
// configuration did not change is not touched, so its WireGuard session
// survives any reconfiguration of the others.
package wg
