package enroll

// SetInitStepHook makes InitSite call h before each file it creates (a test
// makes it fail or panic); it returns a function that undoes it.
func SetInitStepHook(h func(step string) error) (restore func()) {
	old := initStepHook
	initStepHook = h
	return func() { initStepHook = old }
}
