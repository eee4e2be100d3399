/* placeholder until the producer lands */
int main(void) { return 0; }
