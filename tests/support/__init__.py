"""What tests share: harnesses, fakes, fixtures' makers and wait helpers. Test files
import from here, never from one another."""
