package config

import "testing"

// The annotated example in examples/ must stay a valid configuration.
func TestExampleConfigIsValid(t *testing.T) {
	c, err := Load("../../examples/dcmesh.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Peers) != 2 || c.Peers[1].Endpoint.Addr().Is4() {
		t.Errorf("example parsed unexpectedly: %+v", c.Peers)
	}
}
